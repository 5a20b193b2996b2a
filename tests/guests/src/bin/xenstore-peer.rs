//! `xenstore-peer`: a well-behaved xenstore client next to `hostile-xenstore`
//! (`peer=<hostile id> rounds=<n>`, default 32).
//!
//! One round trip writes one of its own `data/k<i>` keys, reads it back and lists
//! `data/`. It runs `rounds` of them first, then publishes `data/ready` (readable by the
//! hostile domain, which starts its abuse on seeing it), keeps going while the hostile
//! domain's `data/phase` is not `raw` (counting the rounds run while it says `abusing`),
//! waits until that node is gone (the hostile domain ended and was released), and runs
//! `rounds` more. It prints one line with the counts, or the first round that failed.
//! Waits are bounded.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod guest {
    use pv_guest::split::Path;
    use pv_guest::xenbus::{self, Client};
    use pv_guest::{StartInfo, bytes_str, cmdline, events, println};
    use test_guests::grant::yield_cpu;
    use xen_pv_abi::kit::TxId;
    use xen_pv_abi::{DomId, Errno};

    test_guests::standard_notes!("xenstore-peer");
    pv_guest::entry!(main);

    /// Round trips each phase runs by default.
    const DEFAULT_ROUNDS: u64 = 32;
    /// Most round trips while waiting for the hostile domain's last phase.
    const MAX_DURING: u32 = 1_000_000;
    /// Yields the wait for the hostile domain's end may take.
    const MAX_POLLS: u32 = 1_000_000;

    fn main(si: &'static StartInfo) -> ! {
        let cmd = si.cmd_line_bytes();
        let peer = cmdline::value(cmd, "peer")
            .and_then(cmdline::parse_u64)
            .and_then(|p| u16::try_from(p).ok())
            .map(DomId);
        let rounds = cmdline::value(cmd, "rounds")
            .and_then(cmdline::parse_u64)
            .unwrap_or(DEFAULT_ROUNDS)
            .min(1_000_000);
        let Some(peer) = peer else {
            println!("xenstore-peer: no peer= on the command line");
            pv_guest::poweroff()
        };
        if let Err(e) = events::init(si) {
            println!("xenstore-peer: cannot set up event delivery: {e}");
            pv_guest::poweroff()
        }
        let mut xs = match xenbus::connect(si) {
            Ok(xs) => xs,
            Err(e) => {
                println!("xenstore-peer: no xenstore connection: {e}");
                pv_guest::poweroff()
            }
        };
        if let Err((what, i, e)) = run(&mut xs, peer, rounds) {
            println!("xenstore-peer: {what} round {i} failed: {e}");
        }
        pv_guest::poweroff()
    }

    type Failure = (&'static str, u64, Errno);

    fn run(xs: &mut Client, peer: DomId, rounds: u64) -> Result<(), Failure> {
        let own = xs
            .read(TxId::NONE, "domid")
            .ok()
            .and_then(cmdline::parse_u64)
            .ok_or(("domid", 0, Errno::EIO))?;
        let mut i = 0u64;
        for _ in 0..rounds {
            round(xs, i).map_err(|e| ("before", i, e))?;
            i += 1;
        }
        let owner = Path::of(format_args!("n{own}"));
        let reader = Path::of(format_args!("r{}", peer.0));
        xs.write(TxId::NONE, "data/ready", b"1")
            .and_then(|()| {
                xenbus::set_perms(
                    xs,
                    TxId::NONE,
                    "data/ready",
                    &[owner.as_str(), reader.as_str()],
                )
            })
            .map_err(|e| ("ready", i, e))?;
        println!("xenstore-peer: {rounds} round trips before, ready");

        let phase = Path::of(format_args!("/local/domain/{}/data/phase", peer.0));
        let (mut during, mut while_abusing) = (0u32, 0u32);
        loop {
            round(xs, i).map_err(|e| ("during", i, e))?;
            i += 1;
            during += 1;
            match xs.read(TxId::NONE, phase.as_str()) {
                Ok(b"raw") => break,
                Ok(b"abusing") => while_abusing += 1,
                _ => {}
            }
            if during >= MAX_DURING {
                println!("xenstore-peer: the hostile domain never reached its last phase");
                break;
            }
        }
        println!("xenstore-peer: {during} round trips during, {while_abusing} while it abused");

        let mut gone = false;
        for _ in 0..MAX_POLLS {
            match xs.read(TxId::NONE, phase.as_str()) {
                Ok(_) => yield_cpu(),
                Err(e) => {
                    println!("xenstore-peer: the hostile domain's phase node is gone: {e}");
                    gone = true;
                    break;
                }
            }
        }
        if !gone {
            println!("xenstore-peer: the hostile domain's phase node stayed");
        }
        for _ in 0..rounds {
            round(xs, i).map_err(|e| ("after", i, e))?;
            i += 1;
        }
        println!(
            "xenstore-peer: all {i} round trips succeeded ({rounds} before, {during} during, {rounds} after)"
        );
        Ok(())
    }

    /// Write, read back, list: `EIO` when the store answered something else.
    fn round(xs: &mut Client, i: u64) -> Result<(), Errno> {
        let key = Path::of(format_args!("data/k{}", i % 4));
        let value = Path::of(format_args!("v{i}"));
        xs.write(TxId::NONE, key.as_str(), value.as_str().as_bytes())?;
        let back = xs.read(TxId::NONE, key.as_str())?;
        if back != value.as_str().as_bytes() {
            println!("xenstore-peer: read back {:?}", bytes_str(back));
            return Err(Errno::EIO);
        }
        let leaf = &key.as_str()["data/".len()..];
        let listed = xs
            .directory(TxId::NONE, "data")?
            .any(|n| n == leaf.as_bytes());
        if !listed {
            return Err(Errno::EIO);
        }
        Ok(())
    }
}
