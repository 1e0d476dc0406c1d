//! The router end to end, over clusters written as config: pins, hashing, draining,
//! full backends, down backends, reloads.

mod cases {
    use crate::balance::policy::{picker, Policy};
    use crate::balance::router::How;
    use crate::balance::{Cluster, Continuum, Maglev, Reach, Routed};
    use crate::clock::now_ms;
    use crate::session::key_hash;
    use crate::settings::OnBackendDown;
    use crate::testing::*;
    use std::sync::Arc;

    /// A route as the tests read it: where, and whether the key moved.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum R {
        To(usize),
        Moved { from: Option<usize>, to: usize },
        PinnedDown(Option<usize>),
        Busy,
        Unavailable,
    }

    trait RouteT {
        fn route_t(&self, key: Option<&[u8]>, p: &mut dyn Policy, reach: &dyn Reach) -> R;
    }

    impl RouteT for Cluster {
        fn route_t(&self, key: Option<&[u8]>, p: &mut dyn Policy, reach: &dyn Reach) -> R {
            match self.route(key, p, reach) {
                Routed::To(r) => match r.how {
                    How::Moved { from } => R::Moved {
                        from,
                        to: r.backend,
                    },
                    _ => R::To(r.backend),
                },
                Routed::PinnedDown(b) => R::PinnedDown(b),
                Routed::Busy => R::Busy,
                Routed::Unavailable | Routed::NoSession => R::Unavailable,
            }
        }
    }

    #[test]
    fn draining_backends_keep_pins_but_get_nothing_new() {
        let c = cluster("[cluster.persistence]\nttl = \"1m\"", THREE);
        let mut p = picker(c.settings.policy, 3, 0);
        for _ in 0..30 {
            assert_ne!(c.route_t(None, &mut *p, &|_: usize| true), R::To(2));
        }
        // A pin made before the drain is still honoured.
        let table = c.sessions.as_ref().unwrap();
        let drained_id = c.backends[2].id;
        table.route(key_hash(b"k99"), now_ms(), true, &|_| true, &mut || {
            Some(drained_id)
        });
        assert_eq!(
            c.route_t(Some(b"k99".as_slice()), &mut *p, &|_: usize| true),
            R::To(2)
        );
    }

    /// One-way requests pin nothing new, answers to a backend find only live pins, and an
    /// ended session lets its backend's count go.
    #[test]
    fn one_way_requests_and_answers_make_no_pins_and_sessions_end() {
        let c = cluster("[cluster.persistence]\nttl = \"1m\"", THREE);
        let mut p = picker(c.settings.policy, 3, 0);
        let all = |_: usize| true;
        let store = c.sessions.as_ref().unwrap();
        assert!(c
            .route_one_way(Some(b"ack"), &mut *p, &all, now_ms())
            .backend()
            .is_some());
        assert_eq!(
            store.len(),
            0,
            "a one-way request without a pin pins nothing"
        );
        assert_eq!(
            c.route_answer(Some(b"call"), &mut *p, &all, now_ms()),
            Routed::NoSession
        );
        assert_eq!(
            c.route_answer(None, &mut *p, &all, now_ms()),
            Routed::NoSession
        );
        let home = c.route(Some(b"call"), &mut *p, &all).backend().unwrap();
        assert_eq!(c.backends[home].load.sessions(), 1);
        assert_eq!(
            c.route_one_way(Some(b"call"), &mut *p, &all, now_ms())
                .backend(),
            Some(home)
        );
        assert_eq!(
            c.route_answer(Some(b"call"), &mut *p, &all, now_ms())
                .backend(),
            Some(home)
        );
        assert!(c.end_session(c.session_key(b"call")));
        assert_eq!((store.len(), c.backends[home].load.sessions()), (0, 0));
        assert!(!c.end_session(c.session_key(b"call")), "once");
    }

    #[test]
    fn on_backend_down_fail_refuses_instead_of_moving() {
        let c = cluster(
            "on_backend_down = \"fail\"\n[cluster.persistence]\nttl = \"1m\"",
            THREE,
        );
        let mut p = picker(c.settings.policy, 3, 0);
        let R::To(home) = c.route_t(Some(b"k7".as_slice()), &mut *p, &|_: usize| true) else {
            panic!("first message must be routed")
        };
        assert_eq!(
            c.route_t(Some(b"k7".as_slice()), &mut *p, &|i: usize| i != home),
            R::PinnedDown(Some(home))
        );
    }

    #[test]
    fn reload_keeps_backend_state_and_pins() {
        let old = cluster("[cluster.persistence]\nttl = \"1m\"", THREE);
        old.sessions.as_ref().unwrap().route(
            key_hash(b"k5"),
            now_ms(),
            true,
            &|_| true,
            &mut || Some(old.backends[1].id),
        );
        old.backends[1].load.on_sent(true);
        let new_cfg = cluster(
            "[cluster.persistence]\nttl = \"1m\"",
            r#"[{ address = "127.0.0.1:2", name = "b", weight = 5 }, { address = "127.0.0.1:4", name = "d" }]"#,
        )
        .settings;
        let new = Cluster::evolve(new_cfg, Some(&old));
        assert!(Arc::ptr_eq(&new.backends[0], &old.backends[1]));
        assert_eq!(new.backends[0].weight(), 5);
        assert_eq!(new.backends[0].load.outstanding(), 1);
        let mut p = picker(new.settings.policy, 2, 0);
        assert_eq!(
            new.route_t(Some(b"k5".as_slice()), &mut *p, &|_: usize| true),
            R::To(0),
            "pin survived"
        );
    }

    #[test]
    fn hashing_policies_route_by_key_bytes_and_walk_past_unusable_backends() {
        for policy in ["ketama", "maglev"] {
            let c = cluster_with(policy, "on_backend_down = \"repin\"", FIVE);
            assert!(c.sessions.is_none());
            let mut p = picker(c.settings.policy, 5, 0);
            // The map is the library's, over the backends' names and weights.
            let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
            let (ketama, maglev) = (Continuum::new(&named), Maglev::new(&named));
            let mut homes = [0usize; 5];
            for i in 0..500 {
                let k = key(i);
                let home = c.key_home(&k).unwrap();
                let lib = match policy {
                    "ketama" => ketama.server_for(&k),
                    _ => maglev.backend_for(&k),
                };
                assert_eq!(Some(home), lib, "{policy}");
                homes[home] += 1;
                // Every message of a key goes home, as often as sent.
                for _ in 1..3 {
                    assert_eq!(c.route_t(Some(&k), &mut *p, &|_: usize| true), R::To(home));
                }
                // Its home unreachable: the next usable one along the map; back when it is.
                let away = c.route_t(Some(&k), &mut *p, &|b: usize| b != home);
                let R::To(other) = away else {
                    panic!("{policy}: {away:?}")
                };
                assert_ne!(other, home);
                assert_eq!(
                    c.route_t(Some(&k), &mut *p, &|b: usize| b != home),
                    away,
                    "stable"
                );
                assert_eq!(c.route_t(Some(&k), &mut *p, &|_: usize| true), R::To(home));
            }
            assert!(homes.iter().all(|&h| h > 40), "{policy}: {homes:?}");
            // Draining or ejected backends are walked past like unreachable ones.
            c.backends[2].set_draining(true);
            c.backends[3].ejection.eject(now_ms() + 60_000);
            for i in 0..200 {
                let k = key(i);
                let got = c.route_t(Some(&k), &mut *p, &|_: usize| true);
                assert!(!matches!(got, R::To(2) | R::To(3)), "{policy}: {got:?}");
                if ![2, 3].contains(&c.key_home(&k).unwrap()) {
                    assert_eq!(got, R::To(c.key_home(&k).unwrap()));
                }
            }
            c.backends[2].set_draining(false);
            c.backends[3].ejection.end();
            // Keyless messages go anywhere usable; nothing usable, nothing routed.
            let mut seen = [false; 5];
            for _ in 0..200 {
                let R::To(b) = c.route_t(None, &mut *p, &|b: usize| b != 0) else {
                    panic!("keyless")
                };
                seen[b] = true;
            }
            assert_eq!(seen, [false, true, true, true, true], "{policy}");
            assert_eq!(
                c.route_t(Some(&key(1)), &mut *p, &|_: usize| false),
                R::Unavailable
            );
        }
    }

    #[test]
    fn with_persistence_pins_apply_before_the_hash() {
        let c = cluster_with(
            "maglev",
            "on_backend_down = \"repin\"\n[cluster.persistence]\nttl = \"1m\"",
            FIVE,
        );
        let mut p = picker(c.settings.policy, 5, 0);
        let k = key(7);
        let home = c.key_home(&k).unwrap();
        // A new key is pinned where the hash puts it.
        assert_eq!(c.route_t(Some(&k), &mut *p, &|_: usize| true), R::To(home));
        // A key pinned elsewhere (e.g. before the policy changed) stays there.
        let elsewhere = (home + 1) % 5;
        let k2 = key(8);
        c.sessions
            .as_ref()
            .unwrap()
            .route(key_hash(&k2), now_ms(), true, &|_| true, &mut || {
                Some(c.backends[elsewhere].id)
            });
        assert_eq!(
            c.route_t(Some(&k2), &mut *p, &|_: usize| true),
            R::To(elsewhere)
        );
        // A pin to an unusable backend moves along the hash map (not by load).
        let R::Moved { from, to } = c.route_t(Some(&k), &mut *p, &|b: usize| b != home) else {
            panic!("must move")
        };
        assert_eq!(from, Some(home));
        let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
        assert_eq!(
            Some(to),
            Maglev::new(&named).pick(&k, &|b: usize| b != home)
        );
    }

    /// Up, but with room only where `room` says.
    struct Full<F: Fn(usize) -> bool>(F);

    impl<F: Fn(usize) -> bool> Reach for Full<F> {
        fn up(&self, _: usize) -> bool {
            true
        }
        fn room(&self, i: usize) -> bool {
            (self.0)(i)
        }
    }

    #[test]
    fn a_full_backend_keeps_its_keys_and_free_messages_go_where_there_is_room() {
        for (policy, extra) in [
            ("ketama", ""),
            ("maglev", ""),
            ("least_outstanding", "[cluster.persistence]\nttl = \"1m\""),
            ("round_robin", "[cluster.persistence]\nttl = \"1m\""),
        ] {
            let c = cluster_with(policy, extra, FIVE);
            let mut p = picker(c.settings.policy, 5, 0);
            for i in 0..200 {
                let k = key(i);
                let R::To(home) = c.route_t(Some(&k), &mut *p, &|_: usize| true) else {
                    panic!("{policy}: not routed")
                };
                // Its backend full (and every other one with room): the key stays put.
                let full = Full(|b: usize| b != home);
                for _ in 0..3 {
                    assert_eq!(c.route_t(Some(&k), &mut *p, &full), R::To(home), "{policy}");
                }
            }
            // A message with no key goes where there is room; nowhere has room: it waits.
            for _ in 0..50 {
                let got = c.route_t(None, &mut *p, &Full(|b: usize| b == 3));
                assert_eq!(got, R::To(3), "{policy}");
            }
            assert_eq!(c.route_t(None, &mut *p, &Full(|_: usize| false)), R::Busy);
        }
    }

    #[test]
    fn key_hashing_fails_a_down_servers_keys_by_default_as_twemproxy_does() {
        for policy in ["ketama", "maglev"] {
            let c = cluster_with(policy, "", FIVE);
            assert_eq!(c.settings.on_backend_down, OnBackendDown::Fail, "{policy}");
            let mut p = picker(c.settings.policy, 5, 0);
            for i in 0..100 {
                let k = key(i);
                let home = c.key_home(&k).unwrap();
                assert_eq!(
                    c.route_t(Some(&k), &mut *p, &|b: usize| b != home),
                    R::PinnedDown(Some(home)),
                    "{policy}"
                );
                assert_eq!(c.route_t(Some(&k), &mut *p, &|_: usize| true), R::To(home));
            }
            // Draining moves keys on, fail or not: that is what draining is for.
            c.backends[2].set_draining(true);
            for i in 0..100 {
                let k = key(i);
                let got = c.route_t(Some(&k), &mut *p, &|_: usize| true);
                assert!(matches!(got, R::To(b) if b != 2), "{policy}: {got:?}");
            }
        }
        let c = cluster_with("round_robin", "", FIVE);
        assert_eq!(c.settings.on_backend_down, OnBackendDown::Repin);
    }

    #[test]
    fn reload_rebuilds_the_hash_map_from_the_new_backends() {
        let old = cluster_with("ketama", "", THREE);
        let new = Cluster::evolve(cluster_with("ketama", "", FIVE).settings, Some(&old));
        let named = [("a", 1), ("b", 1), ("c", 2), ("d", 1), ("e", 1)];
        let lib = Continuum::new(&named);
        for i in 0..100 {
            assert_eq!(new.key_home(&key(i)), lib.server_for(&key(i)));
        }
        assert_eq!(
            cluster("", THREE).key_home(b"k"),
            None,
            "round_robin has no map"
        );
    }
}
