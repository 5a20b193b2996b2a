//! The xl-like tree of one domain (control-plane doc §4.1/§4.2), written by the control
//! domain before the domain is introduced.

use super::{Access, Perm, Xenstored};
use alloc::string::String;
use core::fmt::Write as _;
use xen_pv_abi::{DomId, Errno};

/// What `populate_domain` writes about one domain.
#[derive(Clone, Copy, Debug)]
pub struct DomainInfo<'a> {
    /// The domain.
    pub domid: DomId,
    /// Its name.
    pub name: &'a str,
    /// Its UUID.
    pub uuid: [u8; 16],
    /// Memory size in KiB (`memory/static-max`, `memory/target`).
    pub memory_kib: u64,
    /// Frame of the xenstore ring (`store/ring-ref`).
    pub store_mfn: u64,
    /// The guest's xenstore event channel port (`store/port`).
    pub store_port: u32,
    /// Frame of the console ring (`console/ring-ref`).
    pub console_mfn: u64,
    /// The guest's console event channel port (`console/port`).
    pub console_port: u32,
}

fn fmt(args: core::fmt::Arguments<'_>) -> String {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    s
}

/// The UUID in its canonical 8-4-4-4-12 lowercase form.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `/local/domain/<id>/…` and `/vm/<uuid>/…` as libxl does for a PV domU:
/// the domain directory and `cpu`, `memory`, `device`, `control`, `console` are
/// `[n0, r<id>]` (dom0 owns, guest reads); `data`, `drivers`, `feature`, `attr`,
/// `error`, `device/suspend/event-channel` and the `control/` request keys are `[n<id>]`.
/// dom0's own tree (domid 0) is written with plain `[n0]` permissions.
pub fn populate_domain(store: &mut Xenstored, info: &DomainInfo<'_>) -> Result<(), Errno> {
    let id = info.domid;
    let base = fmt(format_args!("/local/domain/{}", id.0));
    let uuid = uuid_string(&info.uuid);
    let vm = fmt(format_args!("/vm/{uuid}"));
    let ro: &[Perm] = &[
        Perm {
            domid: DomId(0),
            access: Access::None,
        },
        Perm {
            domid: id,
            access: Access::Read,
        },
    ];
    let rw: &[Perm] = &[Perm {
        domid: id,
        access: Access::None,
    }];
    let ro = if id.0 == 0 { &ro[..1] } else { ro };
    let p = |rel: &str| fmt(format_args!("{base}/{rel}"));

    store.mkdir_local(&base)?;
    store.set_perms_local(&base, ro)?;
    store.mkdir_local(&vm)?;
    store.set_perms_local(&vm, ro)?;
    store.write_local(&fmt(format_args!("{vm}/uuid")), uuid.as_bytes())?;
    store.write_local(&fmt(format_args!("{vm}/name")), info.name.as_bytes())?;
    store.write_local(&fmt(format_args!("{vm}/image/ostype")), b"linux")?;

    store.write_local(&p("vm"), vm.as_bytes())?;
    store.write_local(&p("name"), info.name.as_bytes())?;
    store.write_local(&p("domid"), fmt(format_args!("{}", id.0)).as_bytes())?;
    store.write_local(&p("cpu/0/availability"), b"online")?;
    let mem = fmt(format_args!("{}", info.memory_kib));
    store.write_local(&p("memory/static-max"), mem.as_bytes())?;
    store.write_local(&p("memory/target"), mem.as_bytes())?;
    store.write_local(&p("memory/videoram"), b"-1")?;
    store.mkdir_local(&p("device"))?;
    store.mkdir_local(&p("control"))?;
    store.write_local(&p("control/platform-feature-multiprocessor-suspend"), b"1")?;
    store.write_local(&p("control/platform-feature-xs_reset_watches"), b"1")?;
    for k in [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "device/suspend/event-channel",
    ] {
        store.write_local(&p(k), b"")?;
        store.set_perms_local(&p(k), rw)?;
    }
    for d in ["data", "drivers", "feature", "attr", "error"] {
        store.mkdir_local(&p(d))?;
        store.set_perms_local(&p(d), rw)?;
    }
    store.write_local(
        &p("store/port"),
        fmt(format_args!("{}", info.store_port)).as_bytes(),
    )?;
    store.write_local(
        &p("store/ring-ref"),
        fmt(format_args!("{}", info.store_mfn)).as_bytes(),
    )?;
    store.write_local(
        &p("console/ring-ref"),
        fmt(format_args!("{}", info.console_mfn)).as_bytes(),
    )?;
    store.write_local(
        &p("console/port"),
        fmt(format_args!("{}", info.console_port)).as_bytes(),
    )?;
    store.write_local(&p("console/limit"), b"1048576")?;
    store.write_local(&p("console/type"), b"xenconsoled")?;
    store.write_local(&p("console/output"), b"pty")?;
    store.write_local(&p("console/backend-id"), b"0")?;
    Ok(())
}
