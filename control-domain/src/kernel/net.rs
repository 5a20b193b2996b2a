//! The network backends of the configured vifs, all on one switch: each vif is a
//! [`Netback`] plus a port of the library's [`Switch`], configured from its device word
//! (access VLAN, trunk list, or untagged = access port of VLAN 1).
//!
//! Per vif: the backend keys (control-plane doc §4.5: `feature-rx-copy = 1`,
//! `feature-rx-flip = 0`, `feature-sg = 0`, no GSO, no IPv6 checksum offload, no
//! multicast control, no split channels advertised, no multi-queue keys),
//! `hotplug-status = connected` and InitWait are written before the frontend is
//! introduced. When the frontend is Initialised or Connected its `tx-ring-ref`,
//! `rx-ring-ref`, `event-channel` (or `event-channel-tx`/`-rx`) and
//! `request-rx-copy = 1` are read and checked, both ring pages mapped, the channel(s)
//! bound and the switch port added: Connected. A frontend closing, or its domain
//! ending, unmaps, unbinds and removes the port: Closed.
//!
//! Each serve round takes at most [`SLOTS_PER_ROUND`] tx slots of each vif (starting
//! with a different vif each round), so a flooding frontend cannot starve the others;
//! every frame goes through the switch and is copied into the rx buffers the receiving
//! vifs posted. Events are sent only when a ring asks for them, at most one per ring
//! per round for rx. A vif that breaks the ring protocol is closed alone, with the
//! line `d<fe> vif/<devid>: disconnected: <reason>`.
//!
//! Counters ([`control_domain::vif`] lists the keys) are published under
//! `<backend>/statistics/`: on connect, when the vif disconnects, and otherwise at most
//! once per [`REFRESH_FRAMES`](control_domain::vif::REFRESH_FRAMES) frames of that vif,
//! so a busy vif costs one batch of store writes per 64 frames, not per frame.

use super::backend::{CopyIo, MappedRing, Path, XenbusDev, bind, path};
use super::window::Window;
use alloc::vec::Vec;
use control_domain::devices::{Device, DeviceSpec};
use control_domain::netback::{self, FrameMeta, MAX_FRAME, Netback, NetbackConfig};
use control_domain::vif::{
    self, EventChannels, FrontendError, StatsRefresh, VifCounters, read_frontend,
};
use control_domain::vswitch::{Forward, PortConfig, PortId, PortStats, Switch, SwitchConfig};
use control_domain::xenstored::Xenstored;
use core::fmt::{self, Write as _};
use xen_pv_abi::events::AtomicPage;
use xen_pv_abi::kit::device::Work;
use xen_pv_abi::netif::{NetifRxProtocol, NetifTxProtocol};
use xen_pv_abi::{DomId, Errno, EvtchnPort, VcpuId, evtchn, kit, time};

/// Tx slots of one vif served per round (a quarter of its ring).
pub const SLOTS_PER_ROUND: u32 = 64;
/// Switch ports: one per device at most.
const PORTS: u16 = control_domain::devices::MAX_DEVICES as u16;
/// MAC table entries of the switch.
const MAC_TABLE: usize = 1024;

type Say<'a> = &'a mut dyn FnMut(fmt::Arguments<'_>);

/// The connected rings and channels of a vif.
struct Conn {
    tx: MappedRing<NetifTxProtocol>,
    rx: MappedRing<NetifRxProtocol>,
    tx_port: EvtchnPort,
    /// The rx ring's own channel when the frontend split them.
    rx_port: Option<EvtchnPort>,
}

impl Conn {
    fn rx_port(&self) -> EvtchnPort {
        self.rx_port.unwrap_or(self.tx_port)
    }
}

/// One served vif.
pub struct Vif {
    dev: XenbusDev,
    config: PortConfig,
    back: Netback,
    conn: Option<Conn>,
    /// The switch port, while connected.
    port: Option<PortId>,
    /// Counters of the switch ports this vif had before the current one.
    retired: PortStats,
    refresh: StatsRefresh,
    /// An rx response asked for an event this round.
    notify_rx: bool,
    /// Served no more (protocol violation or frontend gone).
    dead: bool,
}

/// Why a vif could not connect.
enum ConnectError {
    Keys(FrontendError),
    Kit(kit::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Keys(e) => write!(f, "{e}"),
            ConnectError::Kit(e) => write!(f, "{e}"),
        }
    }
}

impl From<kit::Error> for ConnectError {
    fn from(e: kit::Error) -> Self {
        ConnectError::Kit(e)
    }
}

impl From<Errno> for ConnectError {
    fn from(e: Errno) -> Self {
        ConnectError::Kit(e.into())
    }
}

/// The switch and every vif on it.
pub struct Net {
    switch: Option<Switch>,
    vifs: Vec<Vif>,
    /// Copies into receivers' rx buffers, which happen while the sender's tx copies
    /// are borrowed.
    gio_rx: CopyIo,
    shared_info: Option<&'static AtomicPage>,
    /// Last clock reading (the switch wants a monotonic clock).
    now_ns: u64,
    /// A frame rewritten for an egress port (a VLAN tag added or removed).
    egress: [u8; MAX_FRAME],
    /// The vif served first next round.
    next: usize,
}

impl Net {
    /// No vif yet; the switch's table is keyed by the TSC so guests cannot aim
    /// collisions. Without memory for the switch, vifs are refused.
    pub fn new(p2m: &'static [u64], shared_info: Option<&'static AtomicPage>) -> Self {
        let cfg = SwitchConfig {
            max_ports: PORTS,
            mac_table_size: MAC_TABLE,
            hash_seed: time::rdtsc().rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            ..SwitchConfig::default()
        };
        Net {
            switch: Switch::new(cfg).ok(),
            vifs: Vec::new(),
            gio_rx: CopyIo::new(p2m),
            shared_info,
            now_ns: 0,
            egress: [0; MAX_FRAME],
            next: 0,
        }
    }

    /// Sets up the backend of `dev` (a vif whose directories exist): its netback, its
    /// keys and InitWait. Allocates here, before the guest runs, never later.
    pub fn add(&mut self, store: &mut Xenstored, dev: &Device) -> Result<(), Errno> {
        let DeviceSpec::Vif { mac, vlan } = &dev.spec else {
            return Err(Errno::EINVAL);
        };
        if self.switch.is_none() {
            return Err(Errno::ENOMEM);
        }
        let config = vif::port_config(vlan)?;
        self.vifs.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        let back = Netback::new(
            dev.frontend,
            NetbackConfig {
                slots_per_call: SLOTS_PER_ROUND,
            },
        )?;
        let xdev = XenbusDev::new(dev, "vif");
        xdev.init_wait(store, &netback::backend_keys(mac))?;
        let v = Vif {
            dev: xdev,
            config,
            back,
            conn: None,
            port: None,
            retired: PortStats::default(),
            refresh: StatsRefresh::default(),
            notify_rx: false,
            dead: false,
        };
        v.publish_stats(store, None);
        self.vifs.push(v);
        Ok(())
    }

    fn clock(&mut self) -> u64 {
        if let Some(si) = self.shared_info
            && let Ok(t) = time::system_time_ns(si, VcpuId(0))
        {
            self.now_ns = self.now_ns.max(t);
        }
        self.now_ns
    }

    /// Follows every vif's frontend and moves frames; true if work is left.
    pub fn serve(
        &mut self,
        store: &mut Xenstored,
        window: &mut Window,
        gio: &mut CopyIo,
        say: Say<'_>,
    ) -> bool {
        let Some(switch) = self.switch.as_mut() else {
            return false;
        };
        for v in &mut self.vifs {
            v.poll_xenbus(store, window, switch, &mut *say);
        }
        let n = self.vifs.len();
        if n == 0 {
            return false;
        }
        let now = self.clock();
        let Some(switch) = self.switch.as_mut() else {
            return false;
        };
        let mut again = false;
        for k in 0..n {
            let i = (self.next + k) % n;
            again |= transmit(
                &mut self.vifs,
                i,
                switch,
                gio,
                &mut self.gio_rx,
                &mut self.egress,
                now,
            );
        }
        self.next = (self.next + 1) % n;
        for v in &mut self.vifs {
            if let Some(c) = &v.conn
                && core::mem::take(&mut v.notify_rx)
            {
                let _ = evtchn::send(c.rx_port());
            }
            if let Some(d) = v.back.disconnected()
                && v.conn.is_some()
            {
                say(format_args!(
                    "d{} vif/{}: disconnected: {d}",
                    v.dev.frontend.0, v.dev.devid
                ));
                v.dev.failed();
                v.disconnect(store, window, switch);
                v.dev.publish(store);
                v.dead = true;
                continue;
            }
            let port = v.port.and_then(|p| switch.port_stats(p).ok());
            if v.conn.is_some() && v.refresh.due(v.counters(port).activity()) {
                v.publish_stats(store, port);
            }
        }
        again
    }

    /// The frontend domain `id` ended: its vifs stop (their counters are kept for the
    /// summary).
    pub fn release(&mut self, store: &mut Xenstored, window: &mut Window, id: DomId) {
        let Some(switch) = self.switch.as_mut() else {
            return;
        };
        for v in &mut self.vifs {
            if v.dev.frontend == id && !v.dead {
                if v.conn.is_some() {
                    v.dev.failed();
                    v.dev.publish(store);
                }
                v.disconnect(store, window, switch);
                v.dead = true;
            }
        }
    }

    /// One line per vif: `vif d<fe>/<devid>: tx <n> rx <n> dropped <n> …`.
    pub fn summary(&self, say: Say<'_>) {
        for v in &self.vifs {
            let port = v
                .port
                .and_then(|p| self.switch.as_ref()?.port_stats(p).ok());
            let c = v.counters(port);
            say(format_args!(
                "vif d{}/{}: {}",
                v.dev.frontend.0,
                v.dev.devid,
                c.summary()
            ));
        }
    }
}

/// Serves vif `i`'s tx ring once: every frame through the switch to the receiving
/// vifs. True if slots are left.
fn transmit(
    vifs: &mut [Vif],
    i: usize,
    switch: &mut Switch,
    gio: &mut CopyIo,
    gio_rx: &mut CopyIo,
    egress: &mut [u8; MAX_FRAME],
    now: u64,
) -> bool {
    let (before, rest) = vifs.split_at_mut(i);
    let Some((me, after)) = rest.split_first_mut() else {
        return false;
    };
    let (Some(c), Some(port)) = (me.conn.as_mut(), me.port) else {
        return false;
    };
    let r = me.back.service_tx(&mut c.tx.ring, gio, |frame, meta| {
        if let Forward::Deliver { to, .. } = switch.forward(port, frame, now) {
            for d in to {
                let Some(dst) = before
                    .iter_mut()
                    .chain(after.iter_mut())
                    .find(|v| v.port == Some(d.port))
                else {
                    continue;
                };
                if let Some(len) = d.egress.write(frame, egress) {
                    dst.receive(&egress[..len], meta, gio_rx);
                }
            }
        }
        // Switch drops are counted by the switch; the guest is told OKAY, as a NIC
        // would.
        true
    });
    match r {
        Ok(s) => {
            if s.notify {
                let _ = evtchn::send(c.tx_port);
            }
            s.more
        }
        // Closed after the round (`Net::serve`).
        Err(_) => false,
    }
}

impl Vif {
    /// Copies a frame into the next rx buffer the frontend posted (counted either way).
    fn receive(&mut self, frame: &[u8], meta: FrameMeta, gio: &mut CopyIo) {
        let Some(c) = self.conn.as_mut() else { return };
        if let Ok(d) = self.back.deliver_rx(&mut c.rx.ring, frame, meta, gio) {
            self.notify_rx |= d.notify;
        }
    }

    /// The counters, with the current port's (`port`).
    fn counters(&self, port: Option<PortStats>) -> VifCounters {
        let mut c = VifCounters {
            back: self.back.stats(),
            port: self.retired,
        };
        if let Some(p) = port {
            c.port.accumulate(&p);
        }
        c
    }

    /// Writes the counters under `statistics/` (no allocation but the store's own,
    /// which fails rather than stops the kernel).
    fn publish_stats(&self, store: &mut Xenstored, port: Option<PortStats>) {
        let mut dir = Path::new();
        if write!(dir, "{}/statistics", self.dev.be_path).is_err() {
            return;
        }
        self.counters(port).for_each(|prefix, name, value| {
            let mut key = [0u8; 48];
            let Some(n) = vif::dashed(prefix, name, &mut key) else {
                return;
            };
            let key = core::str::from_utf8(&key[..n]).unwrap_or("");
            let mut v = heapless::String::<20>::new();
            let _ = write!(v, "{value}");
            let _ = store.write_local(&path(&dir, key), v.as_bytes());
        });
    }

    /// Follows the frontend's state.
    fn poll_xenbus(
        &mut self,
        store: &mut Xenstored,
        window: &mut Window,
        switch: &mut Switch,
        say: Say<'_>,
    ) {
        if self.dead {
            return;
        }
        let (work, before) = self.dev.step(store);
        let (fe, devid) = (self.dev.frontend.0, self.dev.devid);
        match work {
            Work::Connect => match self.connect(store, window, switch) {
                Ok(()) => {
                    self.publish_stats(store, None);
                    let activity = self.counters(None).activity();
                    self.refresh.published(activity);
                    say(format_args!("d{fe} vif/{devid}: connected"));
                }
                Err(e) => {
                    say(format_args!("d{fe} vif/{devid}: cannot connect: {e}"));
                    self.dev.failed();
                    self.disconnect(store, window, switch);
                }
            },
            Work::Disconnect => {
                self.disconnect(store, window, switch);
                say(format_args!("d{fe} vif/{devid}: closed by the frontend"));
            }
            Work::None | Work::Publish => {}
        }
        self.dev.settle(store, before, say);
    }

    /// Checks the frontend's keys, maps both rings, binds the channel(s), adds the
    /// switch port.
    fn connect(
        &mut self,
        store: &Xenstored,
        window: &mut Window,
        switch: &mut Switch,
    ) -> Result<(), ConnectError> {
        let keys = read_frontend(|k| self.dev.fe_read(store, k)).map_err(ConnectError::Keys)?;
        let fe = self.dev.frontend;
        let tx = MappedRing::map(window, fe, keys.tx_ring_ref)?;
        let rx = match MappedRing::map(window, fe, keys.rx_ring_ref) {
            Ok(r) => r,
            Err(e) => {
                tx.unmap(window);
                return Err(e.into());
            }
        };
        let (tx_remote, rx_remote) = match keys.events {
            EventChannels::Shared(p) => (p, None),
            EventChannels::Split { tx, rx } => (tx, Some(rx)),
        };
        let ports = bind(fe, tx_remote).and_then(|t| match rx_remote {
            None => Ok((t, None)),
            Some(r) => match bind(fe, r) {
                Ok(r) => Ok((t, Some(r))),
                Err(e) => {
                    let _ = evtchn::close(t);
                    Err(e)
                }
            },
        });
        let port = ports.and_then(|p| Ok((p, switch.add_port(self.config.clone())?)));
        let ((tx_port, rx_port), port) = match port {
            Ok(p) => p,
            Err(e) => {
                if let Ok((t, r)) = ports {
                    let _ = evtchn::close(t);
                    if let Some(r) = r {
                        let _ = evtchn::close(r);
                    }
                }
                tx.unmap(window);
                rx.unmap(window);
                return Err(e.into());
            }
        };
        self.back.reset();
        self.port = Some(port);
        self.conn = Some(Conn {
            tx,
            rx,
            tx_port,
            rx_port,
        });
        Ok(())
    }

    /// Unbinds and unmaps the rings, removes the switch port (keeping its counters)
    /// and publishes the counters, if connected.
    fn disconnect(&mut self, store: &mut Xenstored, window: &mut Window, switch: &mut Switch) {
        if let Some(Conn {
            tx,
            rx,
            tx_port,
            rx_port,
        }) = self.conn.take()
        {
            let _ = evtchn::close(tx_port);
            if let Some(r) = rx_port {
                let _ = evtchn::close(r);
            }
            tx.unmap(window);
            rx.unmap(window);
        }
        self.notify_rx = false;
        if let Some(p) = self.port.take() {
            if let Ok(s) = switch.port_stats(p) {
                self.retired.accumulate(&s);
            }
            let _ = switch.remove_port(p);
            self.publish_stats(store, None);
            let activity = self.counters(None).activity();
            self.refresh.published(activity);
        }
    }
}
