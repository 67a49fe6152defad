//! The inode table.
//!
//! Fixed nodes (root, head/, head/at, head/watch, head/bigfile/, .wcfs/…) have fixed
//! inode numbers below [`FIRST_DYNAMIC`] and live forever. Dynamic nodes get
//! numbers from a counter that never goes back, so an inode number names one
//! node for the life of the mount (generation 0 is always right).
//!
//! `head/bigfile/<oid>` nodes are kept once created: one per served file,
//! tracked by the change tracker anyway, and the watcher must find the inode
//! of every head file the kernel may cache. Their lookup count only feeds
//! the `BigFile` statistic.
//!
//! `@<tid>/…` nodes count the kernel's lookups and are removed when the
//! kernel forgets them. The kernel forgets a child before its parent (a
//! dentry pins its parent), so removing a node only has to unlink it from
//! its parent's name map; the views thus cost memory only while the kernel
//! holds them.

use fuser::FileType;
use std::collections::HashMap;
use zodb::bigfile::ZBigFile;
use zodb::{Oid, Tid};

pub(crate) const ROOT: u64 = 1;
pub(crate) const HEAD: u64 = 2;
pub(crate) const HEAD_AT: u64 = 3;
pub(crate) const HEAD_BIGFILE: u64 = 4;
pub(crate) const WCFS: u64 = 5;
pub(crate) const ZURL: u64 = 6;
pub(crate) const PINTIMEOUT: u64 = 7;
pub(crate) const STATS: u64 = 8;
pub(crate) const DEBUG: u64 = 9;
pub(crate) const ZHEAD: u64 = 10;
pub(crate) const HEAD_WATCH: u64 = 11;
pub(crate) const FIRST_DYNAMIC: u64 = 16;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A fixed directory or text file: the inode number says which.
    Fixed,
    HeadFile {
        oid: Oid,
    },
    RevDir {
        at: Tid,
        bigfile: Option<u64>,
    },
    RevBigfileDir {
        at: Tid,
        parent: u64,
        files: HashMap<Oid, u64>,
    },
    RevFile {
        at: Tid,
        parent: u64,
        oid: Oid,
        file: ZBigFile,
        size: u64,
        /// Time shown as mtime: the last change of the file object or its
        /// size path as of `at`.
        rev: Tid,
    },
}

struct Entry {
    node: Node,
    nlookup: u64,
}

pub(crate) struct Tree {
    next: u64,
    nodes: HashMap<u64, Entry>,
    head_files: HashMap<Oid, u64>,
    revs: HashMap<Tid, u64>,
    debug: bool,
}

impl Tree {
    pub(crate) fn new(debug: bool) -> Tree {
        let mut nodes = HashMap::new();
        for ino in ROOT..=HEAD_WATCH {
            nodes.insert(
                ino,
                Entry {
                    node: Node::Fixed,
                    nlookup: 0,
                },
            );
        }
        Tree {
            next: FIRST_DYNAMIC,
            nodes,
            head_files: HashMap::new(),
            revs: HashMap::new(),
            debug,
        }
    }

    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino).map(|e| &e.node)
    }

    /// Kind of a fixed node, `None` for a dynamic one or one hidden
    /// (debug/ without -debug).
    pub(crate) fn fixed_kind(&self, ino: u64) -> Option<FileType> {
        match ino {
            ROOT | HEAD | HEAD_BIGFILE | WCFS => Some(FileType::Directory),
            DEBUG if self.debug => Some(FileType::Directory),
            HEAD_AT | HEAD_WATCH | ZURL | PINTIMEOUT | STATS => Some(FileType::RegularFile),
            ZHEAD if self.debug => Some(FileType::RegularFile),
            _ => None,
        }
    }

    /// Entries of a fixed directory (what readdir lists and lookup finds;
    /// dynamic entries appear on lookup only, SPEC §5).
    pub(crate) fn fixed_children(&self, ino: u64) -> Vec<(&'static str, u64)> {
        let all: &[(&'static str, u64)] = match ino {
            ROOT => &[("head", HEAD), (".wcfs", WCFS)],
            HEAD => &[
                ("at", HEAD_AT),
                ("watch", HEAD_WATCH),
                ("bigfile", HEAD_BIGFILE),
            ],
            WCFS => &[
                ("zurl", ZURL),
                ("pintimeout", PINTIMEOUT),
                ("stats", STATS),
                ("debug", DEBUG),
            ],
            DEBUG => &[("zhead", ZHEAD)],
            _ => &[],
        };
        all.iter()
            .copied()
            .filter(|(_, i)| self.fixed_kind(*i).is_some())
            .collect()
    }

    fn alloc(&mut self, node: Node) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, Entry { node, nlookup: 0 });
        ino
    }

    /// Counts one kernel lookup of `ino` (every successful entry reply).
    pub(crate) fn looked_up(&mut self, ino: u64) {
        if let Some(e) = self.nodes.get_mut(&ino) {
            e.nlookup += 1;
        }
    }

    pub(crate) fn head_file(&mut self, oid: Oid) -> u64 {
        if let Some(&ino) = self.head_files.get(&oid) {
            return ino;
        }
        let ino = self.alloc(Node::HeadFile { oid });
        self.head_files.insert(oid, ino);
        ino
    }

    pub(crate) fn head_file_ino(&self, oid: Oid) -> Option<u64> {
        self.head_files.get(&oid).copied()
    }

    /// The inode of `head/bigfile/<oid>` if the kernel holds it now (only
    /// then may it cache pages of it).
    pub(crate) fn head_file_held(&self, oid: Oid) -> Option<u64> {
        let ino = self.head_file_ino(oid)?;
        self.nodes
            .get(&ino)
            .is_some_and(|e| e.nlookup > 0)
            .then_some(ino)
    }

    pub(crate) fn head_file_inos(&self) -> Vec<u64> {
        self.head_files.values().copied().collect()
    }

    pub(crate) fn rev_dir(&mut self, at: Tid) -> u64 {
        if let Some(&ino) = self.revs.get(&at) {
            return ino;
        }
        let ino = self.alloc(Node::RevDir { at, bigfile: None });
        self.revs.insert(at, ino);
        ino
    }

    /// The `@<at>` directory, if the kernel has it.
    pub(crate) fn rev_dir_ino(&self, at: Tid) -> Option<u64> {
        self.revs.get(&at).copied()
    }

    pub(crate) fn rev_bigfile_dir(&mut self, revdir: u64) -> Option<u64> {
        let (at, existing) = match self.get(revdir)? {
            Node::RevDir { at, bigfile } => (*at, *bigfile),
            _ => return None,
        };
        if let Some(ino) = existing {
            return Some(ino);
        }
        let ino = self.alloc(Node::RevBigfileDir {
            at,
            parent: revdir,
            files: HashMap::new(),
        });
        if let Some(Entry {
            node: Node::RevDir { bigfile, .. },
            ..
        }) = self.nodes.get_mut(&revdir)
        {
            *bigfile = Some(ino);
        }
        Some(ino)
    }

    pub(crate) fn rev_file_ino(&self, dir: u64, oid: Oid) -> Option<u64> {
        match self.get(dir)? {
            Node::RevBigfileDir { files, .. } => files.get(&oid).copied(),
            _ => None,
        }
    }

    /// Adds `@at/bigfile/<oid>` under `dir` (or returns the existing one).
    pub(crate) fn rev_file(
        &mut self,
        dir: u64,
        oid: Oid,
        file: ZBigFile,
        size: u64,
        rev: Tid,
    ) -> u64 {
        if let Some(ino) = self.rev_file_ino(dir, oid) {
            return ino;
        }
        let at = match self.get(dir) {
            Some(Node::RevBigfileDir { at, .. }) => *at,
            _ => panic!("rev_file: {dir} is not an @<tid>/bigfile dir"),
        };
        let ino = self.alloc(Node::RevFile {
            at,
            parent: dir,
            oid,
            file,
            size,
            rev,
        });
        if let Some(Entry {
            node: Node::RevBigfileDir { files, .. },
            ..
        }) = self.nodes.get_mut(&dir)
        {
            files.insert(oid, ino);
        }
        ino
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        let Some(e) = self.nodes.get_mut(&ino) else {
            return;
        };
        e.nlookup = e.nlookup.saturating_sub(n);
        if e.nlookup > 0 || ino < FIRST_DYNAMIC {
            return;
        }
        match e.node {
            Node::Fixed | Node::HeadFile { .. } => {}
            Node::RevDir { at, .. } => {
                self.nodes.remove(&ino);
                self.revs.remove(&at);
            }
            Node::RevBigfileDir { parent, .. } => {
                self.nodes.remove(&ino);
                if let Some(Entry {
                    node: Node::RevDir { bigfile, .. },
                    ..
                }) = self.nodes.get_mut(&parent)
                {
                    *bigfile = None;
                }
            }
            Node::RevFile { parent, oid, .. } => {
                self.nodes.remove(&ino);
                if let Some(Entry {
                    node: Node::RevBigfileDir { files, .. },
                    ..
                }) = self.nodes.get_mut(&parent)
                {
                    files.remove(&oid);
                }
            }
        }
    }

    /// `BigFile` statistic: head files the kernel currently knows.
    pub(crate) fn nbigfile(&self) -> usize {
        self.head_files
            .values()
            .filter(|ino| self.nodes.get(ino).is_some_and(|e| e.nlookup > 0))
            .count()
    }

    /// `RevHead` statistic: `@<tid>/` directories alive.
    pub(crate) fn nrevhead(&self) -> usize {
        self.revs.len()
    }

    /// Number of nodes (tests: bounded memory).
    #[allow(dead_code)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}
