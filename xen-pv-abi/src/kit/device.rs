//! The xenbus handshake of a split driver (`io/xenbus.h`) as pure logic: which state
//! to publish and what to do when the peer's `state` node changes.
//!
//! The usual walk, one row per step (F = frontend, B = backend):
//!
//! | F | B | who acts | work |
//! |---|---|---|---|
//! | Initialising | InitWait | F sees InitWait | [`Work::Publish`]: grant the ring(s), bind an event channel, write `ring-ref`, `event-channel`, `protocol`; then Initialised |
//! | Initialised | InitWait | B sees Initialised | [`Work::Connect`]: read the keys, map the ring, bind; then Connected |
//! | Initialised | Connected | F sees Connected | [`Work::Connect`]: read the backend's keys (sectors, mac...); then Connected |
//! | Closing / Closed | ... | either side sees Closing or Closed | [`Work::Disconnect`]: stop using and release the rings; then Closing or Closed |
//! | Closed → Initialising | Closed | F calls [`DeviceState::reconnect`] | B sees Initialising while Closed and returns to InitWait |
//!
//! The last row is what GRUB's PV drivers do when they hand over: they close the device
//! and set the frontend back to Initialising (6 → 1), so that the next kernel finds a
//! backend waiting in InitWait.
//!
//! Watches coalesce, so a side may see the peer skip states; the rules below only look
//! at the state seen now. A peer state that does not parse (a hostile peer) should be
//! passed as [`XenbusState::Unknown`], which closes the device.
//!
//! ```
//! use xen_pv_abi::kit::device::{DeviceState, Work};
//! use xen_pv_abi::xenstore::XenbusState::*;
//!
//! let mut front = DeviceState::frontend();      // publish "1"
//! let mut back = DeviceState::backend();        // publish "2"
//! let t = front.peer_changed(back.state());
//! assert_eq!((t.work, t.next), (Work::Publish, Some(Initialised)));
//! let t = back.peer_changed(front.state());
//! assert_eq!((t.work, t.next), (Work::Connect, Some(Connected)));
//! let t = front.peer_changed(back.state());
//! assert_eq!((t.work, t.next), (Work::Connect, Some(Connected)));
//! ```

use crate::xenstore::XenbusState;

/// Which end of the device this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The guest side (blkfront, netfront): it owns the rings.
    Frontend,
    /// The driver domain side (blkback, netback): it maps the frontend's rings.
    Backend,
}

/// What the caller must do before publishing [`Transition::next`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Nothing.
    None,
    /// Frontend: set up and advertise the shared rings and event channel.
    Publish,
    /// Frontend: read the backend's details. Backend: read the frontend's ring
    /// references and event channel (validate them: they are guest input), map and
    /// bind.
    Connect,
    /// Stop using the rings and release them (unmap / end grants, close the channel).
    Disconnect,
}

/// The outcome of a step: the work, then the state to write to this end's `state`
/// node (`None`: leave it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    /// What to do first.
    pub work: Work,
    /// The state to publish afterwards; [`DeviceState::state`] already returns it.
    pub next: Option<XenbusState>,
}

impl Transition {
    const NOTHING: Transition = Transition {
        work: Work::None,
        next: None,
    };

    const fn to(work: Work, next: XenbusState) -> Transition {
        Transition {
            work,
            next: Some(next),
        }
    }
}

/// One end's handshake state.
///
/// The machine moves to the new state when it returns a [`Transition`]; if the
/// caller's work fails it calls [`failed`](Self::failed) and publishes what that returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceState {
    role: Role,
    state: XenbusState,
    /// Whether rings are set up (after Publish / Connect work, until Disconnect).
    resources: bool,
}

impl DeviceState {
    /// A frontend; its first state to publish is Initialising.
    pub const fn frontend() -> Self {
        DeviceState {
            role: Role::Frontend,
            state: XenbusState::Initialising,
            resources: false,
        }
    }

    /// A backend that has written its features; its first state to publish is
    /// InitWait.
    pub const fn backend() -> Self {
        DeviceState {
            role: Role::Backend,
            state: XenbusState::InitWait,
            resources: false,
        }
    }

    /// This end's role.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The state this end has (or should have) published.
    pub const fn state(&self) -> XenbusState {
        self.state
    }

    /// Whether the rings are set up, i.e. [`Work::Disconnect`] is still due.
    pub const fn has_resources(&self) -> bool {
        self.resources
    }

    fn go(&mut self, work: Work, next: XenbusState) -> Transition {
        match work {
            Work::Publish | Work::Connect => self.resources = true,
            Work::Disconnect => self.resources = false,
            Work::None => {}
        }
        self.state = next;
        Transition::to(work, next)
    }

    fn teardown(&mut self, next: XenbusState) -> Transition {
        let work = if self.resources {
            Work::Disconnect
        } else {
            Work::None
        };
        self.go(work, next)
    }

    /// The peer's `state` node now reads `peer`: what to do.
    pub fn peer_changed(&mut self, peer: XenbusState) -> Transition {
        use XenbusState::*;
        match self.role {
            Role::Frontend => match (self.state, peer) {
                (Initialising, InitWait) => self.go(Work::Publish, Initialised),
                (Initialised, Connected) => self.go(Work::Connect, Connected),
                (Closed, _) => Transition::NOTHING,
                // The backend is going away or gone: release, and tell it we did.
                (_, Closing | Closed | Unknown) => self.teardown(Closed),
                _ => Transition::NOTHING,
            },
            Role::Backend => match (self.state, peer) {
                // A frontend reconnecting after a close (GRUB's 6 -> 1).
                (Closed, Initialising) => self.go(Work::None, InitWait),
                (InitWait, Initialised | Connected) => self.go(Work::Connect, Connected),
                (Closed, _) => Transition::NOTHING,
                (Closing, Closing) => Transition::NOTHING,
                (_, Closing) => self.teardown(Closing),
                (_, Closed | Unknown) => self.teardown(Closed),
                _ => Transition::NOTHING,
            },
        }
    }

    /// This end wants to shut the device down: publish Closing and wait for the peer
    /// (a frontend then releases on the backend's Closing/Closed). Nothing if already
    /// Closing or Closed.
    pub fn close(&mut self) -> Transition {
        match self.state {
            XenbusState::Closing | XenbusState::Closed => Transition::NOTHING,
            _ => self.go(Work::None, XenbusState::Closing),
        }
    }

    /// The caller's work for the last transition failed: release what is set up and
    /// publish Closed.
    pub fn failed(&mut self) -> Transition {
        self.teardown(XenbusState::Closed)
    }

    /// A frontend that is Closed starts over (Closed → Initialising, as GRUB does
    /// before handing the device to the next kernel); `None` for a backend or a
    /// frontend that is not Closed.
    pub fn reconnect(&mut self) -> Option<Transition> {
        if self.role == Role::Frontend && self.state == XenbusState::Closed {
            Some(self.go(Work::None, XenbusState::Initialising))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use XenbusState::*;

    const ALL: [XenbusState; 9] = [
        Unknown,
        Initialising,
        InitWait,
        Initialised,
        Connected,
        Closing,
        Closed,
        Reconfiguring,
        Reconfigured,
    ];

    /// Runs both ends against each other, each reacting to the other's published
    /// state, until neither moves; returns the final states.
    fn settle(f: &mut DeviceState, b: &mut DeviceState) -> (XenbusState, XenbusState) {
        for _ in 0..16 {
            let tf = f.peer_changed(b.state());
            let tb = b.peer_changed(f.state());
            if tf.next.is_none() && tb.next.is_none() {
                return (f.state(), b.state());
            }
        }
        panic!("handshake does not settle: {f:?} {b:?}");
    }

    #[test]
    fn handshake_connects_closes_and_reconnects() {
        let mut f = DeviceState::frontend();
        let mut b = DeviceState::backend();
        assert_eq!(settle(&mut f, &mut b), (Connected, Connected));
        assert!(f.has_resources() && b.has_resources());

        // The frontend closes: backend follows to Closing, frontend releases to
        // Closed, backend releases to Closed.
        assert_eq!(f.close(), Transition::to(Work::None, Closing));
        let t = b.peer_changed(Closing);
        assert_eq!(t, Transition::to(Work::Disconnect, Closing));
        let t = f.peer_changed(Closing);
        assert_eq!(t, Transition::to(Work::Disconnect, Closed));
        let t = b.peer_changed(Closed);
        assert_eq!(t, Transition::to(Work::None, Closed));
        assert!(!f.has_resources() && !b.has_resources());

        // GRUB's 6 -> 1.
        assert_eq!(b.reconnect(), None);
        assert_eq!(
            f.reconnect(),
            Some(Transition::to(Work::None, Initialising))
        );
        assert_eq!(
            b.peer_changed(Initialising),
            Transition::to(Work::None, InitWait)
        );
        assert_eq!(settle(&mut f, &mut b), (Connected, Connected));
    }

    #[test]
    fn backend_going_away_closes_the_frontend() {
        let mut f = DeviceState::frontend();
        let mut b = DeviceState::backend();
        settle(&mut f, &mut b);
        assert_eq!(
            f.peer_changed(Unknown),
            Transition::to(Work::Disconnect, Closed)
        );
        assert_eq!(f.peer_changed(Connected), Transition::NOTHING);
        assert_eq!(f.reconnect().map(|t| t.next), Some(Some(Initialising)));
    }

    #[test]
    fn a_failed_step_releases_and_closes() {
        let mut f = DeviceState::frontend();
        assert_eq!(f.peer_changed(InitWait).work, Work::Publish);
        assert_eq!(f.failed(), Transition::to(Work::Disconnect, Closed));
        let mut b = DeviceState::backend();
        assert_eq!(b.failed(), Transition::to(Work::None, Closed));
    }

    #[test]
    fn any_peer_sequence_keeps_resources_consistent() {
        // Every pair of (own state reached by a walk, peer state): a Connect or
        // Publish is never issued twice without a Disconnect in between, and a
        // Disconnect only when something is set up.
        for role in [Role::Frontend, Role::Backend] {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut m = match role {
                Role::Frontend => DeviceState::frontend(),
                Role::Backend => DeviceState::backend(),
            };
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let had = m.has_resources();
                let t = match x % 13 {
                    9 => m.close(),
                    10 => m.failed(),
                    11 => m.reconnect().unwrap_or(Transition::NOTHING),
                    _ => m.peer_changed(ALL[(x >> 8) as usize % ALL.len()]),
                };
                match t.work {
                    Work::Publish | Work::Connect => assert!(!had || t.work == Work::Connect),
                    Work::Disconnect => assert!(had),
                    Work::None => {}
                }
                if let Some(s) = t.next {
                    assert_eq!(m.state(), s);
                }
                assert!(m.state() != Unknown);
            }
        }
    }
}
