//! The block backends of the configured vbds: each serves a boot module (disk image) of
//! the same name through the library's [`Blkback`], moving data with `GNTTABOP_copy`.
//!
//! The handshake is [`XenbusDev`]'s (polled every serve round); the backend keys and
//! InitWait are written before the frontend is introduced to xenstored, as GRUB expects
//! (control-plane doc §4.4).

use super::backend::{CopyIo, MappedRing, XenbusDev, bind};
use super::window::Window;
use control_domain::blkback::{self, Blkback, BlkbackConfig, DiskInfo, SliceDisk};
use control_domain::devices::{Device, DeviceSpec};
use control_domain::xenstored::Xenstored;
use xen_pv_abi::blkif::BlkifProtocol;
use xen_pv_abi::kit;
use xen_pv_abi::kit::device::Work;
use xen_pv_abi::{DomId, Errno, EvtchnPort, GrantRef, evtchn};

/// Most 4 KiB chunks a writable disk keeps in its copy-on-write overlay (1 MiB).
const OVERLAY_CHUNKS: usize = 256;
/// The only ring layout served (a 64-bit frontend).
const PROTOCOL: &[u8] = b"x86_64-abi";

/// A connected ring: the frontend's page in the window and the bound event channel.
struct Conn {
    ring: MappedRing<BlkifProtocol>,
    port: EvtchnPort,
}

/// One served virtual block device.
pub struct Vbd {
    dev: XenbusDev,
    disk: SliceDisk<'static>,
    back: Blkback,
    conn: Option<Conn>,
    /// Served no more (protocol violation or frontend gone).
    dead: bool,
}

impl Vbd {
    /// Sets up the backend of `dev` (a vbd whose directories exist) over `image`: writes
    /// the disk's keys and switches to InitWait.
    pub fn new(store: &mut Xenstored, dev: &Device, image: &'static [u8]) -> Result<Self, Errno> {
        let DeviceSpec::Vbd { readonly, .. } = dev.spec else {
            return Err(Errno::EINVAL);
        };
        let disk = if readonly {
            SliceDisk::read_only(image)
        } else {
            SliceDisk::copy_on_write(image, OVERLAY_CHUNKS)
        };
        let cfg = BlkbackConfig::default();
        let back = Blkback::new(dev.frontend, cfg)?;
        let keys = blkback::backend_keys(&DiskInfo::of(&disk), cfg.max_indirect_segments);
        let xdev = XenbusDev::new(dev, "vbd");
        // InitWait, with every key written, before the frontend is introduced.
        xdev.init_wait(store, &keys)?;
        Ok(Vbd {
            dev: xdev,
            disk,
            back,
            conn: None,
            dead: false,
        })
    }

    /// The frontend domain.
    pub fn frontend(&self) -> DomId {
        self.dev.frontend
    }

    /// Follows the frontend's state (the kit's xenbus machine) and serves the ring.
    /// Returns whether work is left for another round; `say` hears of what happens.
    pub fn poll(
        &mut self,
        store: &mut Xenstored,
        window: &mut Window,
        gio: &mut CopyIo,
        say: &mut dyn FnMut(core::fmt::Arguments<'_>),
    ) -> bool {
        if self.dead {
            return false;
        }
        let (work, before) = self.dev.step(store);
        match work {
            Work::Connect => match self.connect(store, window) {
                Ok(()) => say(format_args!(
                    "d{} vbd/{}: connected",
                    self.dev.frontend.0, self.dev.devid
                )),
                Err(e) => {
                    say(format_args!(
                        "d{} vbd/{}: cannot connect: {e}",
                        self.dev.frontend.0, self.dev.devid
                    ));
                    self.dev.failed();
                    self.disconnect(window);
                }
            },
            Work::Disconnect => {
                self.disconnect(window);
                let st = self.back.stats();
                say(format_args!(
                    "d{} vbd/{}: disconnected ({} requests, {} sectors read, {} written)",
                    self.dev.frontend.0,
                    self.dev.devid,
                    st.ok + st.errors + st.unsupported,
                    st.sectors_read,
                    st.sectors_written
                ));
            }
            Work::None | Work::Publish => {}
        }
        self.dev.settle(store, before, say);
        if !self.dev.connected() {
            return false;
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match self.back.service(&mut c.ring.ring, gio, &mut self.disk) {
            Ok(s) => {
                if s.notify {
                    let _ = evtchn::send(c.port);
                }
                s.more
            }
            Err(d) => {
                say(format_args!(
                    "d{} vbd/{}: ring protocol violation ({:?}), device closed",
                    self.dev.frontend.0, self.dev.devid, d.error
                ));
                self.dev.failed();
                self.disconnect(window);
                self.dev.publish(store);
                self.dead = true;
                false
            }
        }
    }

    /// Maps the frontend's ring and binds its event channel.
    fn connect(&mut self, store: &Xenstored, window: &mut Window) -> Result<(), kit::Error> {
        if let Some(p) = self.dev.fe_read(store, "protocol")
            && !p.is_empty()
            && p != PROTOCOL
        {
            return Err(Errno::EOPNOTSUPP.into());
        }
        let gref = self
            .dev
            .fe_read_u32(store, "ring-ref")
            .ok_or(Errno::EINVAL)?;
        let port = self
            .dev
            .fe_read_u32(store, "event-channel")
            .ok_or(Errno::EINVAL)?;
        let ring = MappedRing::map(window, self.dev.frontend, GrantRef(gref))?;
        let local = match bind(self.dev.frontend, port) {
            Ok(p) => p,
            Err(e) => {
                ring.unmap(window);
                return Err(e.into());
            }
        };
        self.conn = Some(Conn { ring, port: local });
        Ok(())
    }

    /// Unbinds and unmaps the ring, if connected.
    pub fn disconnect(&mut self, window: &mut Window) {
        if let Some(Conn { ring, port }) = self.conn.take() {
            let _ = evtchn::close(port);
            ring.unmap(window);
        }
    }

    /// The frontend domain ended: releases the ring and serves no more.
    pub fn release(&mut self, window: &mut Window) {
        self.disconnect(window);
        self.dead = true;
    }
}
