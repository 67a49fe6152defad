//! Randomized end-to-end isolation test of the client library (SPEC §7)
//! against Python's view of the same database: several Conns of this
//! process, each at its own `at`, map two ZBigFiles while the Python driver
//! commits random changes — blocks rewritten as ZBlk0/ZBlk1/ZBlk, holes
//! punched, the file grown and truncated, key ranges inserted and deleted
//! so that the blktab BTree splits and merges, ZBlks shared and moved, the
//! whole blktab replaced. Between commits another reader reads head/
//! (pins to the Conns come from there) and the Conns are resynced forward,
//! opened, closed, re-mapped. After every step every mapping must show
//! exactly Python's file as of its Conn's `at`: every mapped block,
//! zeros beyond the end of the file.
//!
//! Seeded: `WCFS_TEST_SEED=N cargo test --release --test isolation_random`
//! repeats a run.

#[path = "../daemon/tests/common/mod.rs"]
mod common;
mod e2e;

use common::watch::stats;
use common::Env;
use e2e::Oracle;
use std::fs::File;
use testkit::Rng;
use wcfs::{Conn, FileH, Mapping, Wcfs};
use zodb::{Oid, Tid};

#[test]
fn e2e_child() {
    e2e::child_main();
}

/// Commits of a run (≥ 50; `$WCFS_E2E_STEPS` overrides).
const COMMITS: usize = 60;
const MAXVIEWS: usize = 4;

/// One test file: its blksize, how many blocks it may grow to, and how
/// many blocks every view maps (more: the tail must read as zeros).
#[derive(Clone, Copy)]
struct FileSpec {
    oid: Oid,
    bs: usize,
    maxblk: u64,
    mapblk: i64,
    /// Big enough to split the blktab's buckets (LOBTree buckets hold 60
    /// keys): key ranges are inserted and deleted in bulk.
    bulk: bool,
}

struct ViewFile {
    fh: FileH,
    /// (blk_start, blk_len, mapping); the first maps [0, mapblk).
    maps: Vec<(i64, i64, Mapping)>,
}

struct View {
    id: usize,
    conn: Conn,
    files: Vec<ViewFile>,
}

struct T {
    env: Env,
    rng: Rng,
    wc: Wcfs,
    files: Vec<FileSpec>,
    /// head/bigfile of each file, held open by "another reader".
    heads: Vec<File>,
    tids: Vec<Tid>,
    views: Vec<View>,
    next_id: usize,
    oracle: Oracle,
    log: Vec<String>,
    /// blktab depths seen (1: one inline bucket; 2+: the tree split).
    depths: std::collections::BTreeSet<u32>,
    /// Per file, the commits that replaced its blktab (file epochs: no
    /// view may be set up or moved to an `at` before one, SPEC §6).
    epochs: Vec<Vec<Tid>>,
    /// Files whose blktab the commit being prepared replaces.
    epoch_pending: Vec<usize>,
    /// Views refused because of an epoch (the check must have run).
    refused: usize,
}

impl T {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nlast steps:\n  {}\nwcfsd log (tail):\n{}",
            self.log[self.log.len().saturating_sub(25)..].join("\n  "),
            e2e::tail(&self.env.w().log(), 30)
        )
    }

    fn note(&mut self, s: String) {
        e2e::crash_note(&s);
        self.log.push(s);
    }

    fn rand_data(&mut self, bs: usize) -> Vec<u8> {
        let n = 1 + self.rng.below(bs as u64) as usize;
        let mut v: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
        // Mostly full blocks with a nonzero tail, some short ones.
        if self.rng.one_in(3) {
            v.resize(bs, 0);
            v[bs - 1] = 0xee;
        }
        v
    }

    /// One random change of file `fi` (not committed).
    fn mutate(&mut self, fi: usize) {
        let f = self.files[fi];
        let nblk = self.env.py.size(f.oid, None) / f.bs as u64;
        let kinds = ["zblk0", "zblk1", "zblk"];
        let op = self.rng.below(if f.bulk { 10 } else { 8 });
        let desc = match op {
            0..=2 => {
                // Rewrite a block, or write one past the end (the file grows).
                let blk = self.rng.below((nblk + 3).min(f.maxblk));
                let kind = kinds[self.rng.below(3) as usize];
                let data = self.rand_data(f.bs);
                self.env.py.write(f.oid, blk, kind, &data);
                format!("write #{blk} {kind} {}B", data.len())
            }
            3 if nblk > 0 => {
                let blk = self.rng.below(nblk);
                let off = self.rng.below(f.bs as u64 - 8);
                let data: Vec<u8> = (0..8).map(|_| self.rng.next_u64() as u8).collect();
                self.env.py.patch(f.oid, blk, off, &data, "zblk1", None);
                format!("patch #{blk}+{off}")
            }
            4 if nblk > 0 => {
                let blk = self.rng.below(nblk);
                self.env.py.punch(f.oid, blk);
                format!("punch #{blk}")
            }
            5 => {
                // Shrink (rarely to nothing).
                let n = if self.rng.one_in(8) {
                    0
                } else {
                    self.rng.below(nblk + 1)
                };
                self.env.py.truncate(f.oid, n);
                format!("truncate {n}")
            }
            6 if nblk > 0 => {
                let src = self.rng.below(nblk);
                let dst = self.rng.below(f.maxblk);
                let mv = self.rng.one_in(2);
                self.env.py.link(f.oid, src, dst, mv);
                format!("link #{src}->#{dst} move={mv}")
            }
            7 if self.rng.one_in(4) => {
                let n = 2 + self.rng.below(f.maxblk - 2);
                let seed = self.rng.next_u64() % 1000;
                self.env.py.newblktab(f.oid, n, seed);
                self.epoch_pending.push(fi);
                format!("newblktab {n}")
            }
            8 => {
                let n = 1 + self.rng.below(60);
                let lo = self.rng.below(f.maxblk - n);
                let seed = self.rng.next_u64() % 1000;
                self.env.py.insrange(f.oid, lo, n, seed, 0.3);
                format!("insrange {lo}+{n}")
            }
            9 => {
                let n = 1 + self.rng.below(60);
                let lo = self.rng.below(f.maxblk);
                self.env.py.delrange(f.oid, lo, n);
                format!("delrange {lo}+{n}")
            }
            _ => {
                let blk = self.rng.below(nblk.max(1));
                let b = self.rng.next_u64() as u8;
                self.env.py.fill(f.oid, blk, "zblk0", b, f.bs);
                format!("fill #{blk} {b:#x}")
            }
        };
        self.note(format!("  file{fi} {desc}"));
    }

    fn commit(&mut self) {
        for fi in 0..self.files.len() {
            if self.rng.one_in(4) && fi > 0 {
                continue; // the second file changes less often
            }
            for _ in 0..1 + self.rng.below(3) {
                self.mutate(fi);
            }
        }
        let tid = self.env.commit();
        self.tids.push(tid);
        for fi in std::mem::take(&mut self.epoch_pending) {
            if self.epochs[fi].last() != Some(&tid) {
                self.epochs[fi].push(tid);
            }
        }
        let shapes: Vec<String> = self
            .files
            .clone()
            .iter()
            .map(|f| {
                let s = self.env.py.shape(f.oid, None);
                self.depths.insert(s.depth);
                format!("{}blk depth {}", s.nkeys, s.depth)
            })
            .collect();
        self.note(format!("commit {tid} ({})", shapes.join(", ")));
    }

    /// Another reader reads blocks of head/ (each read of a block changed
    /// after a view's `at` pins it on that view first).
    fn read_head(&mut self) {
        let fi = self.rng.below(self.files.len() as u64) as usize;
        let f = self.files[fi];
        if self.rng.one_in(4) {
            for blk in 0..f.maxblk {
                let _ = common::read_block_of(&self.heads[fi], blk, f.bs as u64);
            }
            self.note(format!("read head file{fi} whole"));
            return;
        }
        let mut blks = Vec::new();
        for _ in 0..1 + self.rng.below(6) {
            let blk = self.rng.below(f.maxblk);
            let got = common::read_block_of(&self.heads[fi], blk, f.bs as u64)
                .unwrap_or_else(|e| self.fail(&format!("read head file{fi} #{blk}: {e}")));
            assert!(got.len() <= f.bs);
            blks.push(blk);
        }
        self.note(format!("read head file{fi} {blks:?}"));
    }

    fn open_view(&mut self, at: Tid) {
        let id = self.next_id;
        self.next_id += 1;
        let conn = self
            .wc
            .connect(at)
            .unwrap_or_else(|e| self.fail(&format!("connect {at}: {e}")));
        assert_eq!(conn.at(), at);
        let mut files = Vec::new();
        for f in self.files.clone() {
            let fh = conn
                .open(f.oid)
                .unwrap_or_else(|e| self.fail(&format!("view{id} open {}: {e}", f.oid)));
            assert_eq!(fh.oid(), f.oid);
            assert_eq!(fh.blksize(), f.bs, "blksize of {}", f.oid);
            let m = fh
                .mmap(0, f.mapblk)
                .unwrap_or_else(|e| self.fail(&format!("view{id} mmap {}: {e}", f.oid)));
            files.push(ViewFile {
                fh,
                maps: vec![(0, f.mapblk, m)],
            });
        }
        self.note(format!("view{id} connect {at}"));
        self.views.push(View { id, conn, files });
    }

    /// The latest file epoch, if any.
    fn last_epoch(&self) -> Option<Tid> {
        self.epochs.iter().flatten().max().copied()
    }

    /// Index of the first tid ≥ `t`.
    fn tid_index(&self, t: Tid) -> usize {
        self.tids.iter().position(|&x| x >= t).unwrap()
    }

    /// A tid a new view may use: not older than the oldest view (the
    /// daemon keeps history back to the oldest watched `at`), nor than the
    /// last file epoch.
    fn pick_at(&mut self) -> Tid {
        let oldest = self.views.iter().map(|v| v.conn.at()).min();
        let mut lo = oldest.map_or(self.tids.len() - 1, |o| self.tid_index(o));
        if let Some(e) = self.last_epoch() {
            lo = lo.max(self.tid_index(e));
        }
        let i = lo + self.rng.below((self.tids.len() - lo) as u64) as usize;
        self.tids[i]
    }

    /// A view set up before a file epoch is refused when it opens that
    /// file, in upstream's words (SPEC §6), and nothing else changes.
    fn open_before_epoch(&mut self) {
        let Some(e) = self.last_epoch() else { return };
        let oldest = self.views.iter().map(|v| v.conn.at()).min().unwrap_or(e);
        let lo = self.tid_index(oldest);
        let hi = self.tid_index(e);
        if lo >= hi {
            return;
        }
        let at = self.tids[lo + self.rng.below((hi - lo) as u64) as usize];
        let conn = self
            .wc
            .connect(at)
            .unwrap_or_else(|err| self.fail(&format!("connect {at}: {err}")));
        for (fi, f) in self.files.clone().iter().enumerate() {
            let epoch = self.epochs[fi].iter().find(|&&t| t > at).copied();
            match (conn.open(f.oid), epoch) {
                (Ok(fh), None) => fh.close().unwrap(),
                (Err(err), Some(ep)) => {
                    let want = format!("file epoch detected @{ep} in between (at,head=@");
                    if !err.to_string().contains(&want) {
                        self.fail(&format!("open file{fi} @{at}: {err}; want …{want}…"));
                    }
                    self.refused += 1;
                    break;
                }
                (Ok(_), Some(ep)) => self.fail(&format!(
                    "open file{fi} @{at} across its epoch @{ep} succeeded"
                )),
                (Err(err), None) => self.fail(&format!("open file{fi} @{at}: {err}")),
            }
        }
        let _ = conn.close();
        self.note(format!("view @{at} before epoch @{e}: refused"));
    }

    fn resync(&mut self, vi: usize) {
        let cur = self.views[vi].conn.at();
        let mut lo = self.tid_index(cur);
        if let Some(e) = self.last_epoch() {
            lo = lo.max(self.tid_index(e));
        }
        // Mostly forward; now and then to the same `at`.
        let i = lo + self.rng.below((self.tids.len() - lo) as u64) as usize;
        let at = self.tids[i];
        let id = self.views[vi].id;
        self.note(format!("view{id} resync {cur} -> {at}"));
        if let Err(e) = self.views[vi].conn.resync(at) {
            self.fail(&format!("view{id} resync {cur} -> {at}: {e}"));
        }
        if self.views[vi].conn.at() != at {
            self.fail(&format!(
                "view{id} at {} after resync to {at}",
                self.views[vi].conn.at()
            ));
        }
    }

    fn close_view(&mut self, vi: usize) {
        let v = self.views.remove(vi);
        self.note(format!("view{} close", v.id));
        // Close order varies: releasing the parent first is allowed too.
        if self.rng.one_in(2) {
            for vf in &v.files {
                for (_, _, m) in &vf.maps {
                    m.unmap().unwrap();
                }
                vf.fh.close().unwrap();
            }
            v.conn.close().unwrap();
        } else {
            v.conn.close().unwrap();
            for vf in &v.files {
                for (_, _, m) in &vf.maps {
                    let _ = m.unmap();
                }
                let _ = vf.fh.close();
            }
        }
    }

    /// Adds a mapping of a random sub-range, or drops an extra one.
    fn remap(&mut self, vi: usize) {
        let fi = self.rng.below(self.files.len() as u64) as usize;
        let f = self.files[fi];
        let id = self.views[vi].id;
        let vf = &mut self.views[vi].files[fi];
        if vf.maps.len() > 1 && self.rng.one_in(2) {
            let (s, l, m) = vf.maps.pop().unwrap();
            m.unmap().unwrap();
            self.note(format!("view{id} file{fi} unmap [{s}+{l})"));
            return;
        }
        let s = self.rng.below(f.mapblk as u64 + 2) as i64;
        let l = 1 + self.rng.below(8) as i64;
        let m = vf
            .fh
            .mmap(s, l)
            .unwrap_or_else(|e| panic!("view{id} file{fi} mmap [{s}+{l}): {e}"));
        assert_eq!(m.blk_start(), s);
        assert_eq!(
            m.mem_stop() as usize - m.mem_start() as usize,
            l as usize * f.bs
        );
        vf.maps.push((s, l, m));
        self.note(format!("view{id} file{fi} mmap [{s}+{l})"));
    }

    /// Every mapping of view `vi` vs Python's files at its `at`.
    fn verify(&mut self, vi: usize) {
        let at = self.views[vi].conn.at();
        let id = self.views[vi].id;
        for (fi, f) in self.files.clone().into_iter().enumerate() {
            let want = self.oracle.content(&mut self.env.py, f.oid, at);
            for (s, l, m) in &self.views[vi].files[fi].maps {
                let got = e2e::mem(m);
                let quiet = |_: u64, _: &[u8]| String::new();
                if e2e::check_mem(&got, *s, f.bs, &want, &quiet).is_ok() {
                    continue;
                }
                // Failing: fetch every version, to say which one the
                // wrong blocks show.
                for t in self.tids.clone() {
                    self.oracle.content(&mut self.env.py, f.oid, t);
                }
                let oracle = &self.oracle;
                let name = |blk, data: &[u8]| oracle.name_block(f.oid, blk, f.bs, data);
                if let Err(e) = e2e::check_mem(&got, *s, f.bs, &want, &name) {
                    self.fail(&format!(
                        "view{id} at {at} file{fi} ({}) mapping [{s}+{l}) (file size at at: {}): {e}",
                        f.oid,
                        want.len()
                    ));
                }
            }
        }
    }
}

#[test]
fn conns_see_their_at_through_random_commits() {
    let seed = e2e::seed("isolation_random");
    e2e::install_crash_report();
    let mut rng = Rng::new(seed);
    let mut env = Env::new();
    let specs = [
        // Many small blocks: bulk inserts and deletes restructure the BTree.
        (4096usize, 140u64, 150i64, true),
        // Fewer, bigger blocks.
        (if rng.one_in(2) { 8192 } else { 16384 }, 20, 24, false),
    ];
    let mut files = Vec::new();
    for &(bs, maxblk, mapblk, bulk) in &specs {
        let oid = env.py.new_file(bs as u64);
        files.push(FileSpec {
            oid,
            bs,
            maxblk,
            mapblk,
            bulk,
        });
    }
    let t0 = env.py.commit();
    for f in &files {
        let n = if f.bulk { 70 } else { 6 };
        env.py.insrange(f.oid, 0, n, seed % 1000, 0.5);
    }
    let t1 = env.py.commit();
    env.mount(&[]);
    let mnt = env.w().mnt.clone();
    let wc = Wcfs::attach(&mnt).expect("attach");
    assert_eq!(wc.head_at().expect("head_at"), t1);
    let heads = files
        .iter()
        .map(|f| File::open(env.w().head_file(f.oid)).unwrap())
        .collect();
    let mut t = T {
        env,
        rng,
        wc,
        files,
        heads,
        tids: vec![t1],
        views: Vec::new(),
        next_id: 0,
        oracle: Oracle::default(),
        log: Vec::new(),
        depths: Default::default(),
        epochs: vec![Vec::new(); 2],
        epoch_pending: Vec::new(),
        refused: 0,
    };
    let _ = t0;
    t.open_view(t1);
    t.verify(0);
    t.open_view(t1);

    let commits = e2e::steps(COMMITS);
    for _ in 0..commits {
        t.commit();
        let head =
            t.wc.head_at()
                .unwrap_or_else(|e| t.fail(&format!("head_at: {e}")));
        if head != *t.tids.last().unwrap() {
            t.fail(&format!(
                "head_at {head}, last commit {}",
                t.tids.last().unwrap()
            ));
        }
        // Random actions, each followed by a check of some views: a view
        // checked right after a commit faults changed blocks in itself
        // (the daemon pins them on the faulting process's own pinner);
        // one checked after another reader pulls them is pinned from
        // outside.
        for _ in 0..1 + t.rng.below(4) {
            match t.rng.below(10) {
                0..=3 => t.read_head(),
                4 | 5 => {
                    let vi = t.rng.below(t.views.len() as u64) as usize;
                    t.resync(vi);
                }
                6 if t.views.len() < MAXVIEWS => {
                    if t.rng.one_in(3) {
                        t.open_before_epoch();
                    }
                    let at = t.pick_at();
                    t.open_view(at);
                }
                7 if t.views.len() > 1 => {
                    let vi = t.rng.below(t.views.len() as u64) as usize;
                    t.close_view(vi);
                }
                _ => {
                    let vi = t.rng.below(t.views.len() as u64) as usize;
                    t.remap(vi);
                }
            }
            let vi = t.rng.below(t.views.len() as u64) as usize;
            t.verify(vi);
        }
        for vi in 0..t.views.len() {
            t.verify(vi);
        }
    }

    // Everyone answered every pin: nobody was killed.
    let st = stats(&mnt);
    if st.get("pinkill").copied().unwrap_or(0) != 0 {
        t.fail(&format!(
            "pinkill {:?} (a Conn failed a pin)",
            st.get("pinkill")
        ));
    }
    assert!(
        st.get("pin").copied().unwrap_or(0) > 0,
        "no pins at all: {st:?}"
    );
    eprintln!(
        "isolation_random: {commits} commits, pins {:?}, views opened {}, \
         refused across an epoch {}, blktab depths {:?}",
        st.get("pin"),
        t.next_id,
        t.refused,
        t.depths
    );
    while !t.views.is_empty() {
        t.close_view(0);
    }
    t.wc.close().expect("close wcfs");
    // No watch links left behind by closed Conns (the daemon sees the
    // releases shortly after).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let st = stats(&mnt);
        if st.get("WatchLink") == Some(&0) {
            break;
        }
        if std::time::Instant::now() > deadline {
            t.fail(&format!("watch links left after all Conns closed: {st:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Several threads of this process read their own Conn's mapping at the
/// same time — also the same changed block, each thread then blocked in a
/// head read that waits for pins to every Conn of the process, its own
/// included — while another thread reads head/. Every read must equal
/// Python's view at that Conn's `at`, and nothing may hang. Then one Conn
/// resyncs while a thread keeps reading its mapping.
#[test]
fn threads_of_one_process_read_their_conns_at_once() {
    const BS: usize = 4096;
    const NBLK: u64 = 24;
    const NVIEW: usize = 4;
    const ROUNDS: usize = 15;
    let seed = e2e::seed("isolation_threads");
    e2e::install_crash_report();
    let mut rng = Rng::new(seed);
    let mut env = Env::new();
    let f = env.py.new_file(BS as u64);
    env.py.insrange(f, 0, NBLK, seed % 1000, 0.7);
    let mut tids = vec![env.py.commit()];
    env.mount(&[]);
    let mnt = env.w().mnt.clone();
    let wc = Wcfs::attach(&mnt).unwrap();
    let mut oracle = Oracle::default();
    let views: Vec<(Conn, FileH, Mapping)> = (0..NVIEW)
        .map(|_| {
            let c = wc.connect(tids[0]).unwrap();
            let fh = c.open(f).unwrap();
            let m = fh.mmap(0, NBLK as i64 + 2).unwrap();
            (c, fh, m)
        })
        .collect();
    let head = env.w().head_file(f);
    for round in 0..e2e::steps(ROUNDS) {
        // The same few blocks change often: the threads collide on them.
        for _ in 0..1 + rng.below(4) {
            let blk = rng.below(6);
            let b = rng.next_u64() as u8;
            env.py
                .fill(f, blk, ["zblk0", "zblk1"][rng.below(2) as usize], b, BS);
        }
        tids.push(env.commit());
        if rng.one_in(2) {
            let vi = rng.below(NVIEW as u64) as usize;
            let lo = tids.iter().position(|&t| t >= views[vi].0.at()).unwrap();
            let at = tids[lo + rng.below((tids.len() - lo) as u64) as usize];
            views[vi].0.resync(at).unwrap();
        }
        let wants: Vec<_> = views
            .iter()
            .map(|v| oracle.content(&mut env.py, f, v.0.at()))
            .collect();
        // Raw addresses: the threads read memory the main thread keeps
        // mapped until they are joined.
        let jobs: Vec<(usize, usize, std::sync::Arc<Vec<u8>>, Tid)> = views
            .iter()
            .zip(&wants)
            .map(|(v, w)| {
                let a = v.2.mem_start() as usize;
                (a, v.2.mem_stop() as usize - a, w.clone(), v.0.at())
            })
            .collect();
        let head = head.clone();
        let r = e2e::with_timeout(std::time::Duration::from_secs(60), move || {
            let reader = std::thread::spawn(move || {
                for _ in 0..3 {
                    for blk in 0..NBLK {
                        let _ = common::Wcfs::pread_block(&head, blk, BS as u64);
                    }
                }
            });
            let readers: Vec<_> = jobs
                .into_iter()
                .enumerate()
                .map(|(i, (a, len, want, at))| {
                    std::thread::spawn(move || -> Result<(), String> {
                        for pass in 0..3 {
                            // SAFETY: mapped until the main thread joins us.
                            let got = unsafe { e2e::copy_mem(a as *const u8, len) };
                            let quiet = |_: u64, _: &[u8]| String::new();
                            e2e::check_mem(&got, 0, BS, &want, &quiet)
                                .map_err(|e| format!("view {i} at {at}, pass {pass}: {e}"))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            reader.join().unwrap();
            readers
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Result<Vec<()>, String>>()
        });
        match r {
            None => panic!("round {round}: readers hung (deadlock between pins and faults?)"),
            Some(Err(e)) => panic!("round {round}: {e}"),
            Some(Ok(_)) => {}
        }

        // A resync while another thread reads the same mapping: every byte
        // read meanwhile is the old or the new version, never anything
        // else, and afterwards all of it is the new one.
        let vi = round % NVIEW;
        let (old_at, new_at) = (views[vi].0.at(), *tids.last().unwrap());
        let old = oracle.content(&mut env.py, f, old_at);
        let new = oracle.content(&mut env.py, f, new_at);
        let a = views[vi].2.mem_start() as usize;
        let len = views[vi].2.mem_stop() as usize - a;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let (old2, new2) = (old.clone(), new.clone());
        let reader = std::thread::spawn(move || -> Result<usize, (u64, Vec<u8>)> {
            let mut passes = 0;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) || passes == 0 {
                // SAFETY: mapped until the main thread joins us.
                let got = unsafe { e2e::copy_mem(a as *const u8, len) };
                for (blk, g) in got.chunks(BS).enumerate() {
                    let (o, n) = (
                        e2e::want_block(&old2, blk as u64, BS),
                        e2e::want_block(&new2, blk as u64, BS),
                    );
                    // Byte by byte: a block being re-mapped while we
                    // copy it may come half from the old mapping.
                    let torn_ok = g
                        .iter()
                        .zip(o.iter().zip(&n))
                        .all(|(b, (x, y))| b == x || b == y);
                    if !torn_ok {
                        return Err((blk as u64, g.to_vec()));
                    }
                }
                passes += 1;
            }
            Ok(passes)
        });
        let conn = views[vi].0.clone();
        let done = e2e::with_timeout(std::time::Duration::from_secs(60), move || {
            conn.resync(new_at)
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        match done {
            None => panic!("round {round}: resync hung while another thread read the mapping"),
            Some(r) => r.unwrap_or_else(|e| panic!("round {round}: resync: {e}")),
        }
        let passes = match reader.join().unwrap() {
            Ok(n) => n,
            Err((blk, data)) => {
                for t in tids.clone() {
                    oracle.content(&mut env.py, f, t);
                }
                panic!(
                    "round {round}: block #{blk} read during resync {old_at} -> {new_at} is \
                     neither version: {:02x?}… is {}; all tids: {tids:?}",
                    &data[..8],
                    oracle.name_block(f, blk, BS, &data)
                );
            }
        };
        let got = e2e::mem(&views[vi].2);
        let quiet = |_: u64, _: &[u8]| String::new();
        e2e::check_mem(&got, 0, BS, &new, &quiet).unwrap_or_else(|e| {
            panic!(
                "round {round}: view {vi} after resync to {new_at} ({passes} reads during it): {e}"
            )
        });
    }
    assert_eq!(stats(&mnt).get("pinkill"), Some(&0));
    for (c, _, _) in views {
        c.close().unwrap();
    }
    wc.close().unwrap();
}
