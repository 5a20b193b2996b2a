//! Run-time state of a domain: identity, how it is doing, its vCPUs (one today), the
//! frames the builder gave it, and its console.

use crate::console::{LineBuffer, Prefix, TokenBucket};
use crate::domain::builder::BuiltDomain;
use crate::platform::GuestFrame;
use alloc::vec::Vec;
use xen_pv_abi::sched::ShutdownReason;
use xen_pv_abi::{DomId, EvtchnPort, Mfn, VcpuId};

/// Longest domain name kept.
pub const NAME_MAX: usize = 31;

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// May be scheduled.
    Runnable,
    /// Shut itself down (sched_op SHUTDOWN).
    Shutdown(ShutdownReason),
    /// Shut down with a code that is no `SHUTDOWN_*` reason (recorded by
    /// `SCHEDOP_shutdown_code` or given to `SCHEDOP_remote_shutdown`, which Xen 4.17
    /// accept as they are); counts as failed.
    ShutdownOther(u8),
    /// Killed by the hypervisor (unhandled exception, protocol violation).
    Crashed,
    /// The builder refused its image; it never ran.
    Refused,
    /// Ended by the control domain (`XEN_DOMCTL_destroydomain`).
    Destroyed,
    /// Still running when the control domain ended, which ends the run (hv.rs
    /// `end_domain`); counts as failed.
    Killed,
}

impl DomainState {
    /// The word used in the final report.
    pub const fn report_word(self) -> &'static str {
        match self {
            DomainState::Runnable => "running",
            DomainState::Shutdown(r) => r.name(),
            DomainState::ShutdownOther(_) => "unknown reason",
            DomainState::Crashed => "crashed",
            DomainState::Refused => "refused",
            DomainState::Destroyed => "destroyed",
            DomainState::Killed => "killed at exit",
        }
    }
}

/// The saved state of one of a domain's vCPUs while it does not run.
#[derive(Clone, Debug, Default)]
pub struct Vcpu {
    /// Its id within the domain (its index in [`Domain::vcpus`]).
    pub id: VcpuId,
    /// Registers to resume with.
    pub frame: GuestFrame,
    /// Machine address of its kernel-mode L4 (`MMUEXT_NEW_BASEPTR`).
    pub cr3: u64,
    /// Machine address of its user-mode L4 (`MMUEXT_NEW_USER_BASEPTR`; 0 = none).
    pub user_cr3: u64,
    /// LDT installed by `MMUEXT_SET_LDT` (traps/ldt.rs).
    pub ldt: crate::traps::ldt::GuestLdt,
    /// GDT installed by `set_gdt` (traps/gdt.rs).
    pub gdt: crate::traps::gdt::GuestGdt,

    /// In guest user mode (runs on `user_cr3`, user GS base); else guest kernel mode.
    pub user_mode: bool,
    /// Trap table, callbacks, kernel stack, segment bases, FPU state (traps/mod.rs).
    pub traps: crate::traps::VcpuTraps,
    /// The ports it waits on in `SCHEDOP_poll` (sched/run.rs), while it does.
    pub poll: Option<alloc::vec::Vec<xen_pv_abi::EvtchnPort>>,
    /// A page-table reference drop an interrupted hypercall left to finish (Xen's
    /// `old_guest_table`; see `PtCtx::deferred`): the next mmu_update/mmuext_op
    /// finishes it first.
    pub old_table: Option<xen_pv_abi::Mfn>,
    /// System time of its last `vcpu_time_info` update; `None`: never published
    /// (time/hypercalls.rs).
    pub time_published_ns: Option<u64>,
    /// While its domain is paused: whether it must be made runnable at unpause (it was
    /// runnable when paused, or something woke it since).
    pub wake_on_unpause: bool,
}

impl Vcpu {
    /// The L4 the vCPU runs on now: the user root in user mode, else the kernel root.
    pub fn active_cr3(&self) -> u64 {
        if self.user_mode {
            self.user_cr3
        } else {
            self.cr3
        }
    }
}

/// One domain.
#[derive(Debug)]
pub struct Domain {
    /// Domain id.
    pub id: DomId,
    /// Name from the boot bundle (printable ASCII, ≤ 31 bytes).
    pub name: heapless::String<NAME_MAX>,
    /// The initial (privileged) domain.
    pub dom0: bool,
    /// Life cycle.
    pub state: DomainState,
    /// Its vCPUs, indexed by [`VcpuId`] (one today: vCPU 0). Reach them through
    /// [`Domain::vcpu`] / [`Domain::vcpu_mut`].
    pub vcpus: Vec<Vcpu>,
    /// Pages given to the domain.
    pub nr_pages: u64,
    /// Its shared_info frame (time info lives there).
    pub shared_info: Mfn,
    /// Console ring frame and port (domU only).
    pub console_ring: Option<(Mfn, EvtchnPort)>,
    /// Xenstore ring frame and port (domU only).
    pub store_ring: Option<(Mfn, EvtchnPort)>,
    /// Partial console_io line.
    pub console: LineBuffer,
    /// console_io rate limiter (not applied to dom0).
    pub console_io_bucket: TokenBucket,
    /// Whether the "dropping output" notice was printed already.
    pub console_io_dropping_reported: bool,
    /// Code recorded by SCHEDOP_shutdown_code (Xen keeps any byte, known reason or
    /// not); it wins over a later shutdown's reason (as in Xen).
    pub shutdown_code: Option<u8>,
    /// `VMASST_TYPE_*` bits the domain enabled with `vm_assist` (only assists that change
    /// nothing here are accepted: mmu/hypercalls.rs).
    pub vm_assist: u64,
    /// Scheduler weight and cap (0: Xen's defaults, 256 and none), from the bundle.
    pub sched_params: (u16, u16),
    /// Grant table frames (GNTTABOP_setup_table).
    pub grant: crate::grant::GrantTable,
    /// Controller pauses (`XEN_DOMCTL_pausedomain`) not yet undone: while non-zero its
    /// vCPUs are kept blocked in the scheduler (control/mod.rs).
    pub pause_count: u32,
    /// Destroyed by the control domain (`XEN_DOMCTL_destroydomain`): it no longer exists
    /// for domctl/sysctl, whatever its [`DomainState`] says for the final report.
    pub destroyed: bool,
}

impl Domain {
    /// Found by its id, as Xen's `rcu_lock_domain_by_id` finds a domain: built (not
    /// refused) and not destroyed; a domain that shut down or crashed still exists until
    /// the control domain destroys it. The one notion of existence every hypercall that
    /// names another domain uses (`existing_slot` of the core).
    pub fn exists(&self) -> bool {
        !self.destroyed && self.state != DomainState::Refused
    }

    /// Its vCPU `v`. Ids come from the hypervisor (the running vCPU, the scheduler's
    /// and timers' keys), never unchecked from a guest: an unknown one is a hypervisor
    /// bug and panics (use [`Domain::vcpu_get`] for a guest-chosen id).
    pub fn vcpu(&self, v: VcpuId) -> &Vcpu {
        &self.vcpus[v.0 as usize]
    }

    /// Its vCPU `v`, mutably; as [`Domain::vcpu`].
    pub fn vcpu_mut(&mut self, v: VcpuId) -> &mut Vcpu {
        &mut self.vcpus[v.0 as usize]
    }

    /// Its vCPU `v`, if it has one by that id (for ids a guest chose).
    pub fn vcpu_get(&self, v: VcpuId) -> Option<&Vcpu> {
        self.vcpus.get(usize::try_from(v.0).ok()?)
    }

    /// Its vCPU `v` mutably, if it has one by that id.
    pub fn vcpu_get_mut(&mut self, v: VcpuId) -> Option<&mut Vcpu> {
        self.vcpus.get_mut(usize::try_from(v.0).ok()?)
    }

    /// A domain the builder produced, ready to run (`now_ns` starts its rate limiter).
    pub fn built(id: DomId, name: &[u8], dom0: bool, b: BuiltDomain, now_ns: u64) -> Self {
        let mut d = Domain::refused(id, name, dom0, now_ns);
        d.state = DomainState::Runnable;
        let v0 = d.vcpu_mut(VcpuId(0));
        v0.frame = b.entry;
        v0.cr3 = b.cr3;
        d.nr_pages = b.nr_pages;
        d.shared_info = b.shared_info;
        d.console_ring = b.console;
        d.store_ring = b.store;
        d
    }

    /// A domain whose image was refused: it only appears in reports.
    pub fn refused(id: DomId, name: &[u8], dom0: bool, now_ns: u64) -> Self {
        Domain {
            id,
            name: sanitize_name(name),
            dom0,
            state: DomainState::Refused,
            vcpus: alloc::vec![Vcpu {
                id: VcpuId(0),
                ..Vcpu::default()
            }],
            nr_pages: 0,
            shared_info: Mfn(0),
            console_ring: None,
            store_ring: None,
            console: LineBuffer::new(),
            console_io_bucket: TokenBucket::new(now_ns),
            console_io_dropping_reported: false,
            shutdown_code: None,
            vm_assist: 0,
            sched_params: (0, 0),
            grant: crate::grant::GrantTable::new(),
            pause_count: 0,
            destroyed: false,
        }
    }

    /// Whether the scheduler may pick it.
    pub fn is_runnable(&self) -> bool {
        self.state == DomainState::Runnable
    }

    /// How its console lines are prefixed.
    pub fn prefix(&self) -> Prefix<'_> {
        Prefix {
            id: self.id,
            name: &self.name,
        }
    }
}

/// The bundle name as printable ASCII: at most [`NAME_MAX`] bytes, other bytes as '?',
/// "unnamed" when empty (it appears in every console line and report).
pub fn sanitize_name(raw: &[u8]) -> heapless::String<NAME_MAX> {
    let mut name = heapless::String::new();
    for &b in raw.iter().take(NAME_MAX) {
        let c = if (0x21..0x7f).contains(&b) {
            b as char
        } else {
            '?'
        };
        let _ = name.push(c);
    }
    if name.is_empty() {
        let _ = name.push_str("unnamed");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_printable_and_bounded() {
        assert_eq!(sanitize_name(b"pv-guest").as_str(), "pv-guest");
        assert_eq!(sanitize_name(b"a b\x1b\n").as_str(), "a?b??");
        assert_eq!(sanitize_name(b"").as_str(), "unnamed");
        assert_eq!(sanitize_name(&[b'x'; 40]).len(), NAME_MAX);
    }

    #[test]
    fn report_words() {
        assert_eq!(
            DomainState::Shutdown(ShutdownReason::Poweroff).report_word(),
            "poweroff"
        );
        assert_eq!(DomainState::Crashed.report_word(), "crashed");
        assert_eq!(DomainState::Refused.report_word(), "refused");
        let d = Domain::refused(DomId(4), b"x", false, 0);
        assert!(!d.is_runnable());
    }

    #[test]
    fn a_domain_has_vcpu_0_only_and_ids_match_slots() {
        let mut d = Domain::refused(DomId(4), b"x", false, 0);
        assert_eq!(d.vcpus.len(), 1);
        assert_eq!(d.vcpu(VcpuId(0)).id, VcpuId(0));
        for (i, v) in d.vcpus.iter().enumerate() {
            assert_eq!(v.id.0 as usize, i);
        }
        d.vcpu_mut(VcpuId(0)).cr3 = 0x1000;
        assert_eq!(d.vcpu_get(VcpuId(0)).map(|v| v.cr3), Some(0x1000));
        // Guest-chosen ids beyond the list are absent, not a panic.
        for bad in [1, 2, 31, u32::MAX] {
            assert!(d.vcpu_get(VcpuId(bad)).is_none(), "{bad}");
            assert!(d.vcpu_get_mut(VcpuId(bad)).is_none(), "{bad}");
        }
    }
}
