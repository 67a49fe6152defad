//! Temporary stand-in for `zdata::Tracker` until it lands: same API,
//! conservative change detection (a tracked block changes when any object
//! its load went through changes). Deleted once the real tracker is in.

use crate::zdata::{Error, FileDelta, FileInfo};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use zodb::bigfile::{Block, ZBigFile};
use zodb::{Commit, Oid, Storage, Tid};

pub struct Tracker {
    st: Arc<dyn Storage>,
    head: Tid,
    files: Mutex<HashMap<Oid, File>>,
}

struct File {
    zf: ZBigFile,
    info: FileInfo,
    deps: HashMap<u64, Vec<Oid>>,
}

impl Tracker {
    pub fn new(st: Arc<dyn Storage>, head: Tid) -> Tracker {
        Tracker {
            st,
            head,
            files: Mutex::new(HashMap::new()),
        }
    }
    #[allow(dead_code)]
    pub fn head(&self) -> Tid {
        self.head
    }
    fn load(&self, oid: Oid) -> Result<File, Error> {
        let zf = ZBigFile::load(&*self.st, oid, self.head)?;
        let size = zf.size(&*self.st, self.head)?;
        let rev = zf.serial();
        Ok(File {
            info: FileInfo {
                blksize: zf.blksize(),
                size: size.size,
                rev,
            },
            zf,
            deps: HashMap::new(),
        })
    }
    pub fn open_file(&self, oid: Oid) -> Result<FileInfo, Error> {
        if let Some(f) = self.files.lock().get(&oid) {
            return Ok(f.info.clone());
        }
        let f = self.load(oid)?;
        let info = f.info.clone();
        self.files.lock().entry(oid).or_insert(f);
        Ok(info)
    }
    pub fn file_info(&self, oid: Oid) -> Option<FileInfo> {
        self.files.lock().get(&oid).map(|f| f.info.clone())
    }
    pub fn load_block(&self, oid: Oid, blk: u64) -> Result<Block, Error> {
        let zf = match self.files.lock().get(&oid) {
            Some(f) => f.zf.clone(),
            None => panic!("load_block of untracked file {oid}"),
        };
        let b = zf.load_block(&*self.st, blk, self.head)?;
        let mut deps = b.path_oids();
        deps.extend(b.zblk.iter().map(|z| z.oid));
        deps.extend(b.parts.iter().map(|p| p.oid));
        if let Some(f) = self.files.lock().get_mut(&oid) {
            f.deps.insert(blk, deps);
        }
        Ok(b)
    }
    pub fn apply(&mut self, c: &Commit) -> Result<Vec<FileDelta>, Error> {
        self.head = c.tid;
        let changed: BTreeSet<Oid> = c.oids.iter().copied().collect();
        let oids: Vec<Oid> = self.files.get_mut().keys().copied().collect();
        let mut out = Vec::new();
        for oid in oids {
            let mut d = FileDelta {
                file: oid,
                ..Default::default()
            };
            let old_size = self.files.get_mut()[&oid].info.size;
            if changed.contains(&oid) {
                let nf = self.load(oid)?;
                d.reset = true;
                d.size = Some(nf.info.size);
                self.files.get_mut().insert(oid, nf);
            } else {
                let f = self.files.get_mut().get_mut(&oid).unwrap();
                f.deps.retain(|blk, deps| {
                    let hit = deps.iter().any(|o| changed.contains(o));
                    if hit {
                        d.blocks.insert(*blk);
                    }
                    !hit
                });
                let size = f.zf.size(&*self.st, c.tid)?.size;
                if size != old_size {
                    d.size = Some(size);
                    f.info.size = size;
                }
            }
            if d.reset || d.size.is_some() || !d.blocks.is_empty() {
                let f = self.files.get_mut().get_mut(&oid).unwrap();
                f.info.rev = c.tid;
                out.push(d);
            }
        }
        Ok(out)
    }
    pub fn trim(&mut self, _keep_from: Tid) {}
}
