//! The bare-metal kernel: discovers the boot-built domains, maps their rings, and serves
//! xenstore and the consoles, driven by events only.

mod backend;
mod blk;
mod heap;
mod net;
mod window;

use alloc::vec::Vec;
use control_domain::cmdline::domain_name;
use control_domain::console::{self, Backend, Output};
use control_domain::devices::{self, Device, DeviceSpec};
use control_domain::modules;
use control_domain::xenstored::ring::RingConn;
use control_domain::xenstored::{self, DomainInfo, Limits, Xenstored};
use window::{Mapping, Window};
use xen_pv_abi::domctl::{self, GetDomainInfo, dominf};
use xen_pv_abi::event_channel::Virq;
use xen_pv_abi::grant_table::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE};
use xen_pv_abi::hvm::{
    self, HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN,
    HVM_PARAM_STORE_PFN,
};
use xen_pv_abi::{DomId, EvtchnPort, GrantRef, VcpuId, evtchn, hypercall};
use xen_pv_rt::{StartInfo, events};

xen_pv_rt::entry!(main, supported_features: 1 << 11);

/// Serial output: `console_io` writes, which the hypervisor prints verbatim for dom0.
struct Serial;

impl Output for Serial {
    fn write(&mut self, bytes: &[u8]) {
        // Nothing to do about a failed console write.
        let _ = xen_pv_abi::hypercall::console_io_write(bytes);
    }
}

/// A ring page mapped from a domain and the local end of its event channel.
struct Ring {
    map: Mapping,
    port: EvtchnPort,
}

/// One served domain.
struct Served {
    id: DomId,
    console: Option<Ring>,
    store: Option<Ring>,
    conn: RingConn,
}

struct Kernel {
    cmdline: &'static [u8],
    /// The devices the command line configures (the toolstack's part of them).
    devices: Vec<Device>,
    store: Xenstored,
    console: Backend,
    out: Serial,
    window: Window,
    domains: Vec<Served>,
    dom_exc: EvtchnPort,
    virq_console: EvtchnPort,
    seen_dom_exc: u32,
    seen_console: u32,
    /// The boot modules (disk images), by name.
    disks: Vec<(&'static [u8], &'static [u8])>,
    /// The block backends of configured vbds with a disk.
    vbds: Vec<blk::Vbd>,
    /// The switch and the network backends of configured vifs.
    net: net::Net,
    gio: backend::CopyIo,
}

/// Reads of typed input per wake-up (128 bytes each, the hypervisor's buffer size).
const INPUT_READS: usize = 8;

fn main(si: &'static StartInfo) -> ! {
    // First of all, before the domUs run any further: they stay paused until their
    // rings are mapped and they are introduced (as xl builds a domain paused and
    // unpauses it once the backends are set up), so no early console output is lost.
    let mut held = [(DomId(0), false); window::MAX_DOMAINS];
    let n_held = hold_domains(&mut held);
    let held = &held[..n_held];
    heap::init();
    let cmdline = si.cmd_line_bytes();
    let mut out = Serial;
    let mut console = Backend::new(
        &domain_name(cmdline, DomId(0)),
        console::raw_requested(cmdline),
    );
    let virqs = events::init(si).and_then(|shared_info| {
        let exc = evtchn::bind_virq(Virq::DOM_EXC, VcpuId(0))?;
        let con = evtchn::bind_virq(Virq::CONSOLE, VcpuId(0))?;
        Ok((exc, con, shared_info))
    });
    let (dom_exc, virq_console, shared_info) = match virqs {
        Ok(v) => v,
        Err(e) => {
            console.say(&mut out, format_args!("cannot set up events: {e}"));
            xen_pv_rt::shutdown(xen_pv_rt::ShutdownReason::Crash)
        }
    };
    let devices = devices::parse_devices(cmdline, |word, why| {
        console.say(
            &mut out,
            format_args!(
                "device word {:?} refused: {why}",
                core::str::from_utf8(word).unwrap_or("(not UTF-8)")
            ),
        );
    });
    let mut k = Kernel {
        cmdline,
        devices,
        store: Xenstored::new(Limits::default()),
        console,
        out,
        window: Window::new(),
        domains: Vec::new(),
        dom_exc,
        virq_console,
        seen_dom_exc: events::count(dom_exc),
        seen_console: events::count(virq_console),
        disks: Vec::new(),
        vbds: Vec::new(),
        net: net::Net::new(p2m(si), Some(shared_info)),
        gio: backend::CopyIo::new(p2m(si)),
    };
    k.list_disks(si);
    k.discover();
    k.report_orphan_devices();
    for &(id, built_paused) in held {
        // Our hold, and the pause the hypervisor builds a domU with.
        for _ in 0..1 + usize::from(built_paused) {
            if let Err(e) = domctl::unpausedomain(id) {
                k.say(format_args!("d{}: unpause failed: {e}", id.0));
            }
        }
    }
    loop {
        let generation = events::upcalls();
        let again = k.serve();
        if k.domains.is_empty() {
            let (console, out) = (&mut k.console, &mut k.out);
            k.net.summary(&mut |a| console.say(out, a));
            xen_pv_rt::poweroff()
        }
        if !again {
            // Blocks with events enabled; any upcall (a ring kick, a VIRQ) ends it.
            events::wait_until(|| events::upcalls() != generation);
        }
    }
}

/// Puts a controller pause on every live domU (at most `held.len()`); returns how many
/// are held (in `held`, each with whether it was paused already: the hypervisor builds
/// domUs paused when there is a control domain, which then unpauses them).
fn hold_domains(held: &mut [(DomId, bool)]) -> usize {
    let mut buf = [GetDomainInfo::default(); 16];
    let mut n_held = 0;
    let mut first = 1u16;
    while let Ok(n) = domctl::getdomaininfolist(DomId(first), &mut buf) {
        for info in &buf[..n] {
            let ended = info.flags & (dominf::DYING | dominf::SHUTDOWN) != 0;
            if info.domain == 0 || ended {
                continue;
            }
            if n_held == held.len() {
                // More domains than can be served: they run unserved rather than
                // staying paused for ever.
                if info.flags & dominf::PAUSED != 0 {
                    let _ = domctl::unpausedomain(DomId(info.domain));
                }
                continue;
            }
            if domctl::pausedomain(DomId(info.domain)).is_ok() {
                held[n_held] = (DomId(info.domain), info.flags & dominf::PAUSED != 0);
                n_held += 1;
            }
        }
        match buf[..n].last().map(|l| l.domain.checked_add(1)) {
            Some(Some(next)) if n == buf.len() => first = next,
            _ => break,
        }
    }
    n_held
}

impl Kernel {
    fn say(&mut self, args: core::fmt::Arguments<'_>) {
        self.console.say(&mut self.out, args);
    }

    /// Names every boot module (disk image) of the initrd, one line each.
    fn list_disks(&mut self, si: &'static StartInfo) {
        let Some((va, len)) = modules::initrd_range(si) else {
            return;
        };
        // SAFETY: the hypervisor maps [mod_start, mod_start + mod_len) in the initial
        // mapping, before the p2m list (initrd_range checked both ends), as ordinary
        // pages of ours; nothing in this kernel writes or unmaps them, so they stay
        // valid, initialised and unchanged for the kernel's lifetime.
        let initrd: &'static [u8] = unsafe { core::slice::from_raw_parts(va as *const u8, len) };
        let table = match modules::parse(initrd) {
            Ok(t) => t,
            Err(e) => {
                self.say(format_args!("initrd: not a module table ({e:?})"));
                return;
            }
        };
        for (i, m) in table.iter().enumerate() {
            match m {
                Ok(m) => {
                    let name = core::str::from_utf8(m.name).unwrap_or("?");
                    self.say(format_args!("disk {name}: {} bytes", m.data.len()));
                    if self.disks.try_reserve(1).is_ok() {
                        self.disks.push((m.name, m.data));
                    }
                }
                Err(e) => self.say(format_args!("initrd: module {i}: {e:?}")),
            }
        }
    }

    /// Sets up every existing domain but ourselves.
    fn discover(&mut self) {
        let mut buf = [GetDomainInfo::default(); 16];
        let mut first = 1u16;
        loop {
            let n = match domctl::getdomaininfolist(DomId(first), &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    self.say(format_args!("getdomaininfolist: {e}"));
                    return;
                }
            };
            for info in &buf[..n] {
                let ended = info.flags & (dominf::DYING | dominf::SHUTDOWN) != 0;
                if info.domain != 0 && !ended {
                    self.set_up(info);
                }
            }
            let Some(last) = buf[..n].last() else { return };
            if n < buf.len() {
                return;
            }
            match last.domain.checked_add(1) {
                Some(next) => first = next,
                None => return,
            }
        }
    }

    /// Maps a domain's rings, binds its ports, writes its xenstore tree and introduces it.
    /// What fails is reported and left unserved; the domain is still followed until it
    /// ends.
    fn set_up(&mut self, info: &GetDomainInfo) {
        let id = DomId(info.domain);
        if self.domains.iter().any(|d| d.id == id) || self.domains.try_reserve(1).is_err() {
            return;
        }
        let name = domain_name(self.cmdline, id);
        let param = |index| hvm::get_param(id, index);
        let params = (|| {
            Ok::<_, xen_pv_abi::Errno>((
                param(HVM_PARAM_STORE_PFN)?,
                param(HVM_PARAM_STORE_EVTCHN)?,
                param(HVM_PARAM_CONSOLE_PFN)?,
                param(HVM_PARAM_CONSOLE_EVTCHN)?,
            ))
        })();
        let mut served = Served {
            id,
            console: None,
            store: None,
            conn: RingConn::default(),
        };
        let (store_mfn, store_port, console_mfn, console_port) = match params {
            Ok(p) => p,
            Err(e) => {
                self.say(format_args!("d{} {name}: no ring parameters: {e}", id.0));
                self.domains.push(served);
                return;
            }
        };
        served.store = self.connect(
            id,
            &name,
            "xenstore",
            GrantRef(GNTTAB_RESERVED_XENSTORE),
            store_port,
        );
        served.console = self.connect(
            id,
            &name,
            "console",
            GrantRef(GNTTAB_RESERVED_CONSOLE),
            console_port,
        );
        if served.console.is_some() && self.console.add(id, &name).is_err() {
            self.say(format_args!("d{} {name}: console not served", id.0));
        }
        if served.store.is_some() {
            let dom = DomainInfo {
                domid: id,
                name: &name,
                uuid: info.handle,
                memory_kib: info.max_pages.saturating_mul(4),
                store_mfn,
                store_port: store_port as u32,
                console_mfn,
                console_port: console_port as u32,
            };
            let r = xenstored::populate_domain(&mut self.store, &dom).and_then(|()| {
                // The toolstack's device directories exist before the domain can look.
                self.add_devices(id, &name);
                self.store.introduce(id)
            });
            if let Err(e) = r {
                self.say(format_args!(
                    "d{} {name}: not introduced to xenstored: {e}",
                    id.0
                ));
            }
        }
        self.domains.push(served);
    }

    /// Writes the xenstore directories of every configured device whose frontend is `id`
    /// (and whose backend domain exists); reports each.
    fn add_devices(&mut self, id: DomId, name: &str) {
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if d.frontend != id {
                continue;
            }
            let (kind, devid, be) = (d.kind.clone(), d.devid, d.backend);
            let r = match domctl::getdomaininfo(be) {
                Ok(_) => devices::write_device(&mut self.store, d),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    self.say(format_args!(
                        "d{} {name}: device {kind}/{devid}, backend d{}",
                        id.0, be.0
                    ));
                    self.add_vbd(i, name);
                    self.add_vif(i, name);
                }
                Err(e) => self.say(format_args!(
                    "d{} {name}: device {kind}/{devid} (backend d{}) not created: {e}",
                    id.0, be.0
                )),
            }
        }
    }

    /// Starts the block backend of device `i` if it is a vbd of ours with a disk.
    fn add_vbd(&mut self, i: usize, name: &str) {
        let d = &self.devices[i];
        let DeviceSpec::Vbd { disk, .. } = &d.spec else {
            return;
        };
        if d.backend != DomId(0) {
            return;
        }
        let (fe, devid) = (d.frontend, d.devid);
        let Some(&(_, image)) = self.disks.iter().find(|(n, _)| *n == disk.as_bytes()) else {
            let disk = disk.clone();
            self.say(format_args!(
                "d{} {name}: vbd/{devid}: no disk named {disk}, not served",
                fe.0
            ));
            return;
        };
        if self.vbds.try_reserve(1).is_err() {
            return;
        }
        match blk::Vbd::new(&mut self.store, &self.devices[i], image) {
            Ok(v) => self.vbds.push(v),
            Err(e) => self.say(format_args!(
                "d{} {name}: vbd/{devid}: backend not started: {e}",
                fe.0
            )),
        }
    }

    /// Starts the network backend of device `i` if it is a vif of ours.
    fn add_vif(&mut self, i: usize, name: &str) {
        let d = &self.devices[i];
        if !matches!(d.spec, DeviceSpec::Vif { .. }) || d.backend != DomId(0) {
            return;
        }
        let (fe, devid) = (d.frontend, d.devid);
        if let Err(e) = self.net.add(&mut self.store, &self.devices[i]) {
            self.say(format_args!(
                "d{} {name}: vif/{devid}: backend not started: {e}",
                fe.0
            ));
        }
    }

    /// Reports configured devices whose frontend domain is not served.
    fn report_orphan_devices(&mut self) {
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if self.domains.iter().any(|s| s.id == d.frontend) {
                continue;
            }
            let (kind, fe) = (d.kind.clone(), d.frontend);
            self.say(format_args!(
                "device {kind} of d{}: no such domain, not created",
                fe.0
            ));
        }
    }

    /// Maps grant `gref` of `id` and binds its port `remote` (a u64 parameter).
    fn connect(
        &mut self,
        id: DomId,
        name: &str,
        what: &str,
        gref: GrantRef,
        remote: u64,
    ) -> Option<Ring> {
        let Ok(remote) = u32::try_from(remote) else {
            self.say(format_args!("d{} {name}: bad {what} port {remote}", id.0));
            return None;
        };
        let map = match self.window.map(id, gref) {
            Ok(m) => m,
            Err(e) => {
                self.say(format_args!(
                    "d{} {name}: cannot map the {what} ring: {e}",
                    id.0
                ));
                return None;
            }
        };
        match evtchn::bind_interdomain(id, EvtchnPort(remote)) {
            Ok(port) => {
                events::reset_count(port);
                Some(Ring { map, port })
            }
            Err(e) => {
                self.say(format_args!(
                    "d{} {name}: cannot bind the {what} port: {e}",
                    id.0
                ));
                let _ = self.window.unmap(map);
                None
            }
        }
    }

    /// Serves everything once; returns whether work was left for another round.
    fn serve(&mut self) -> bool {
        let mut again = false;
        let c = events::count(self.virq_console);
        if c != self.seen_console {
            self.seen_console = c;
            again |= self.route_input();
        }
        for i in 0..self.domains.len() {
            self.drain_console(i);
            self.service_store(i);
        }
        again |= self.serve_vbds();
        let (console, out) = (&mut self.console, &mut self.out);
        again |= self
            .net
            .serve(&mut self.store, &mut self.window, &mut self.gio, &mut |a| {
                console.say(out, a)
            });
        // Requests may have queued watch events for domains served before them. No
        // allocation here: a guest can fill the heap up to its xenstore quota, and an
        // infallible allocation failing would stop the control domain.
        for i in 0..self.domains.len() {
            let id = self.domains[i].id;
            if self.store.domains_with_output().any(|d| d == id) {
                self.service_store(i);
            }
        }
        let e = events::count(self.dom_exc);
        if e != self.seen_dom_exc {
            self.seen_dom_exc = e;
            self.reap();
        }
        again
    }

    /// Follows every block frontend and serves its ring; true if work is left.
    fn serve_vbds(&mut self) -> bool {
        let mut again = false;
        for v in &mut self.vbds {
            let (console, out) = (&mut self.console, &mut self.out);
            again |= v.poll(&mut self.store, &mut self.window, &mut self.gio, &mut |a| {
                console.say(out, a)
            });
        }
        again
    }

    /// Moves typed bytes to the focus domain; true if the input buffer may hold more.
    fn route_input(&mut self) -> bool {
        for _ in 0..INPUT_READS {
            let mut buf = [0u8; 128];
            let n = match hypercall::console_io_read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let domains = &mut self.domains;
            self.console.input(&buf[..n], &mut self.out, |id, bytes| {
                let Some(ring) = domains
                    .iter_mut()
                    .find(|d| d.id == id)
                    .and_then(|d| d.console.as_mut())
                else {
                    return Ok(0);
                };
                let n = console::feed_input(&mut ring.map.page(), bytes)?;
                if n > 0 {
                    let _ = evtchn::send(ring.port);
                }
                Ok(n)
            });
        }
        true
    }

    fn drain_console(&mut self, i: usize) {
        let d = &mut self.domains[i];
        let Some(ring) = d.console.as_mut() else {
            return;
        };
        if self
            .console
            .drain(d.id, &mut ring.map.page(), &mut self.out)
            > 0
        {
            // Room in the ring again: a guest waiting for it is told (xenconsoled does).
            let _ = evtchn::send(ring.port);
        }
    }

    fn service_store(&mut self, i: usize) {
        let d = &mut self.domains[i];
        let Some(ring) = d.store.as_mut() else { return };
        match d.conn.service(&mut ring.map.page(), &mut self.store, d.id) {
            Ok(s) => {
                if s.notify {
                    let _ = evtchn::send(ring.port);
                }
            }
            Err(v) => {
                let id = d.id;
                // xenstored dropped the connection itself; the ring is not serviced
                // again (the domain stays introduced until it ends).
                let ring = d.store.take();
                if let Some(r) = ring {
                    self.close(r);
                }
                let name = domain_name(self.cmdline, id);
                self.say(format_args!(
                    "d{} {name}: xenstore ring protocol violation ({v:?}), not served any more",
                    id.0
                ));
            }
        }
    }

    /// Tears down every domain that shut down, crashed or is gone.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.domains.len() {
            let ended = match domctl::getdomaininfo(self.domains[i].id) {
                Ok(info) => info.flags & (dominf::SHUTDOWN | dominf::DYING) != 0,
                Err(_) => true,
            };
            if !ended {
                i += 1;
                continue;
            }
            let mut d = self.domains.remove(i);
            let window = &mut self.window;
            self.vbds.retain_mut(|v| {
                if v.frontend() == d.id {
                    v.release(window);
                    false
                } else {
                    true
                }
            });
            self.net.release(&mut self.store, &mut self.window, d.id);
            // Its last words, then the rest of its unfinished line.
            let mut page = d.console.as_mut().map(|r| r.map.page());
            self.console.remove(d.id, page.as_mut(), &mut self.out);
            self.store.release(d.id, true);
            for ring in [d.console.take(), d.store.take()].into_iter().flatten() {
                self.close(ring);
            }
        }
    }

    fn close(&mut self, ring: Ring) {
        let _ = evtchn::close(ring.port);
        if let Err(e) = self.window.unmap(ring.map) {
            self.say(format_args!("unmap failed: {e}"));
        }
    }
}

/// The p2m list (`nr_pages` machine frame numbers, `mfn_list` in start_info).
fn p2m(si: &'static StartInfo) -> &'static [u64] {
    let Ok(n) = usize::try_from(si.nr_pages) else {
        return &[];
    };
    if si.mfn_list == 0 || !si.mfn_list.is_multiple_of(8) {
        return &[];
    }
    // SAFETY: the hypervisor maps the p2m list, `nr_pages` u64s at `mfn_list` (8-aligned,
    // checked), in the initial mapping as ordinary pages of ours; this kernel never
    // writes or unmaps them, so they stay valid and unchanged for its lifetime.
    unsafe { core::slice::from_raw_parts(si.mfn_list as *const u64, n) }
}
