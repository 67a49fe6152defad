//! Randomized oracle test of the isolation protocol: several links watch
//! two files at different `at` while the Python driver commits and blocks
//! are read through head/. After every operation, the pins each link
//! received must be exactly the model's (common::watch::PinModel: none
//! missing, none extra, none duplicated), and what a watcher sees through
//! its pins (`@rev/` for pinned blocks, head/ for the rest) must equal
//! Python's view as of its `at`. Seeded: `WCFS_TEST_SEED=N` repeats a run.
//!
//! Ignored until the server side of head/watch exists.

mod common;

use common::watch::{
    pin_keys, pread_random, pread_random_fd, stats, BlkIds, ExpPin, PinModel, WatchLink,
};
use common::Env;
use std::collections::BTreeMap;
use std::fs::File;
use testkit::Rng;
use zodb::{Oid, Tid};

const BS: u64 = 4096;
const NBLK: u64 = 8;
const NLINK: usize = 3;
/// Random steps (commits, head reads, watches, verifications): many in release
/// builds, where the suite runs in CI; fewer in debug builds.
const STEPS: usize = if cfg!(debug_assertions) { 60 } else { 400 };

struct T {
    env: Env,
    ids: BlkIds,
    files: Vec<Oid>,
    heads: Vec<File>,
    links: Vec<WatchLink>,
    m: PinModel,
    /// Every commit tid ≥ h0, ascending.
    tids: Vec<Tid>,
    log: Vec<String>,
}

impl T {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nlast operations:\n  {}\nwcfsd log (tail):\n{}",
            self.log[self.log.len().saturating_sub(15)..].join("\n  "),
            tail(&self.env.w().log(), 40)
        )
    }

    /// The pins each link received since the last check vs the model's.
    fn check_pins(&mut self, want: &BTreeMap<usize, Vec<ExpPin>>, op: &str) {
        for (i, l) in self.links.iter().enumerate() {
            let got = pin_keys(&l.take_pins());
            let want = want.get(&i).cloned().unwrap_or_default();
            if got != want {
                self.fail(&format!(
                    "{op}: link {i}: pins {got:?}, model wants {want:?}"
                ));
            }
            if !l.protocol_errors().is_empty() || !l.fatal().is_empty() {
                self.fail(&format!(
                    "link {i}: protocol errors {:?}, stream 0 {:?}",
                    l.protocol_errors(),
                    l.fatal()
                ));
            }
        }
    }

    fn read(&mut self, fi: usize, blk: u64) -> Vec<u8> {
        let f = self.files[fi];
        self.log.push(format!("read {f} #{blk}"));
        let data = pread_random_fd(&self.heads[fi], blk, BS)
            .unwrap_or_else(|e| self.fail(&format!("read head {f} #{blk}: {e}")));
        let want = self.m.read(f, blk);
        self.check_pins(&want, &format!("read {f} #{blk}"));
        data
    }

    fn commit(&mut self, rng: &mut Rng) {
        let n = 1 + rng.below(3);
        let mut what = Vec::new();
        for _ in 0..n {
            let f = self.files[rng.below(self.files.len() as u64) as usize];
            // The last block is never punched nor moved: sizes stay fixed.
            let blk = rng.below(NBLK - 1);
            match rng.below(6) {
                0 => {
                    self.env.py.punch(f, blk);
                    what.push(format!("punch {f} #{blk}"));
                }
                1 => {
                    let src = rng.below(NBLK);
                    self.env.py.link(f, src, blk, false);
                    what.push(format!("link {f} #{src}->#{blk}"));
                }
                2 => {
                    let off = rng.below(BS - 16);
                    let data = rng_bytes(rng, 16);
                    self.env.py.patch(f, blk, off, &data, "zblk1", Some(1024));
                    what.push(format!("patch {f} #{blk}"));
                }
                k => {
                    let kind = if k == 3 { "zblk1" } else { "zblk0" };
                    let byte = rng.below(256) as u8;
                    self.env
                        .py
                        .fill(f, blk, kind, byte, 1 + rng.below(BS) as usize);
                    what.push(format!("fill {f} #{blk} {kind}"));
                }
            }
        }
        let tid = self.env.commit();
        if Some(&tid) == self.tids.last() {
            // Nothing really changed (e.g. a hole punched again): ZODB
            // wrote no transaction.
            self.log
                .push(format!("commit: {}: no transaction", what.join(", ")));
            return;
        }
        let state = self.ids.get(&self.files, tid);
        let changed = self.m.commit(tid, state);
        self.tids.push(tid);
        self.log.push(format!(
            "commit {tid}: {} -> changed {changed:?}",
            what.join(", ")
        ));
        // Nothing is read by a commit: no pins.
        self.check_pins(&BTreeMap::new(), "commit");
    }

    fn watch(&mut self, li: usize, fi: usize, at: Tid) {
        let f = self.files[fi];
        self.log.push(format!("link {li}: watch {f} @{at}"));
        let want = self.m.watch(li, f, at);
        let got = self.links[li].watch(f, at);
        match (&want, &got) {
            (Ok(pins), Ok(())) => {
                let w = BTreeMap::from([(li, pins.clone())]);
                self.check_pins(&w, &format!("link {li}: watch {f} @{at}"));
            }
            (Err(w), Err(e)) if e == w || (w.ends_with("δt = ") && e.starts_with(w.as_str())) => {
                self.check_pins(&BTreeMap::new(), "watch error");
            }
            _ => self.fail(&format!(
                "link {li}: watch {f} @{at}: got {got:?}, model {want:?}"
            )),
        }
    }

    fn unwatch(&mut self, li: usize, fi: usize) {
        let f = self.files[fi];
        self.log.push(format!("link {li}: watch {f} -"));
        self.m.unwatch(li, f);
        if let Err(e) = self.links[li].unwatch(f) {
            self.fail(&format!("link {li}: watch {f} -: {e}"));
        }
        self.check_pins(&BTreeMap::new(), "unwatch");
    }

    /// The view of watch (li, f) through its pins equals Python's at `at`.
    fn verify(&mut self, li: usize, fi: usize) {
        let f = self.files[fi];
        let Some(at) = self.m.watches.get(&(li, f)).map(|w| w.at) else {
            return;
        };
        self.log.push(format!("link {li}: verify {f} @{at}"));
        // First read through head every block the watch takes from head
        // (a client faults them in; this may pin them now), then assemble.
        for blk in 0..NBLK {
            if self.m.source(li, f, blk).is_none() {
                self.read(fi, blk);
            }
        }
        for blk in 0..NBLK {
            let got = match self.m.source(li, f, blk) {
                None => pread_random_fd(&self.heads[fi], blk, BS),
                Some(rev) => pread_random(&self.env.w().at_file(rev, f), blk, BS),
            }
            .unwrap_or_else(|e| self.fail(&format!("verify read #{blk}: {e}")));
            let want = self.env.py.block(f, blk, Some(at));
            if got != want {
                self.fail(&format!(
                    "link {li}: {f} #{blk} as of {at} (source {:?}): differs from Python",
                    self.m.source(li, f, blk)
                ));
            }
        }
    }
}

fn rng_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

#[test]
fn pins_match_the_model() {
    pins_match(Env::new(), "iso_oracle", STEPS);
}

/// The same with the daemon serving a real ZEO server that Python commits
/// to through a ZEO ClientStorage.
#[test]
fn pins_match_the_model_zeo() {
    pins_match(Env::new_zeo(), "iso_oracle_zeo", STEPS);
}

/// The same with the daemon serving `postgresql://`, a streaming replica
/// of the primary Python commits to through RelStorage.
#[test]
fn pins_match_the_model_pg_replica() {
    pins_match(Env::new_pg(true), "iso_oracle_pg_replica", STEPS);
}

/// The same with the daemon serving `neo://` (2 storage nodes, 1
/// replica), Python committing through `neo.client.Storage`.
#[test]
fn pins_match_the_model_neo() {
    let Some(env) = Env::new_neo("iso_oracle_neo", 1) else {
        return;
    };
    pins_match(env, "iso_oracle_neo", STEPS);
}

fn pins_match(mut env: Env, name: &str, steps: usize) {
    let seed = testkit::seed(name);
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    for _ in 0..2 {
        let f = env.py.new_file(BS);
        for b in 0..NBLK {
            if b == NBLK - 1 || !rng.one_in(4) {
                let byte = rng.below(256) as u8;
                env.py.fill(f, b, "zblk0", byte, BS as usize);
            }
        }
        files.push(f);
    }
    let h0 = env.py.commit();
    env.mount(&["-pintimeout", "10s"]);
    // (A replica may not have replayed h0 yet when the daemon starts.)
    env.w().wait_head(h0);
    assert_eq!(env.w().head(), h0);
    let mut ids = BlkIds::start(&env.storage_arg());
    let state = ids.get(&files, h0);
    let mut m = PinModel::new(h0, state);
    let heads: Vec<File> = files
        .iter()
        .map(|f| {
            m.open(*f);
            File::open(env.w().head_file(*f)).unwrap()
        })
        .collect();
    let links = (0..NLINK)
        .map(|_| WatchLink::open(&env.w().path("head/watch")).expect("open head/watch"))
        .collect();
    let mut t = T {
        env,
        ids,
        files,
        heads,
        links,
        m,
        tids: vec![h0],
        log: Vec::new(),
    };
    // Link 0 watches both files at h0 for the whole run: it keeps the
    // history from being trimmed past h0 (SPEC §5) and collects the most
    // pins.
    t.watch(0, 0, h0);
    t.watch(0, 1, h0);

    for step in 0..steps {
        match rng.below(10) {
            0..=2 => t.commit(&mut rng),
            3..=5 => {
                let fi = rng.below(2) as usize;
                t.read(fi, rng.below(NBLK));
            }
            6 | 7 => {
                let li = 1 + rng.below(NLINK as u64 - 1) as usize;
                let fi = rng.below(2) as usize;
                let f = t.files[fi];
                let cur = t.m.watches.get(&(li, f)).map(|w| w.at);
                // Mostly forward (or equal); sometimes back, to see the error.
                let cands: Vec<Tid> = match cur {
                    Some(c) if !rng.one_in(5) => {
                        t.tids.iter().copied().filter(|x| *x >= c).collect()
                    }
                    _ => t.tids.clone(),
                };
                let at = cands[rng.below(cands.len() as u64) as usize];
                t.watch(li, fi, at);
            }
            8 => {
                let li = 1 + rng.below(NLINK as u64 - 1) as usize;
                let fi = rng.below(2) as usize;
                if rng.one_in(3) {
                    t.unwatch(li, fi);
                } else {
                    t.verify(li, fi);
                }
            }
            _ => {
                let li = rng.below(NLINK as u64) as usize;
                let fi = rng.below(2) as usize;
                t.verify(li, fi);
            }
        }
        if step % 10 == 9 {
            let st = stats(&t.env.w().mnt);
            let nw = t.m.watches.len() as i64;
            let np = t.m.npinned() as i64;
            if st.get("Watch") != Some(&nw) || st.get("PinnedBlk") != Some(&np) {
                t.fail(&format!(
                    "stats {st:?}: want Watch {nw}, PinnedBlk {np} (model)"
                ));
            }
            assert_eq!(st.get("WatchLink"), Some(&(NLINK as i64)));
            assert_eq!(st.get("pinkill"), Some(&0));
        }
    }
    // Finally every watch verified, and everything moved to head unpins.
    for li in 0..NLINK {
        for fi in 0..2 {
            t.verify(li, fi);
        }
    }
    let head = *t.tids.last().unwrap();
    for li in 1..NLINK {
        for fi in 0..2 {
            if t.m.watches.contains_key(&(li, t.files[fi])) {
                t.watch(li, fi, head);
            }
        }
    }
    assert_eq!(stats(&t.env.w().mnt).get("pinkill"), Some(&0));
}
