//! One watcher thread for every token file: it wakes the workers whose file may have changed.
//!
//! inotify watches each token file's directory (not the file: an atomic rename replaces
//! the file's inode, and Kubernetes swaps a `..data` symlink beside it), so the idle cost
//! is zero whatever the number of tokens. An event in a directory wakes every worker with
//! a file there; each re-reads its file and carries on if the token is unchanged.
//! Directories that cannot be watched (missing at start, inotify limits) are polled every
//! two seconds by the same thread. A reload adds and removes files through the
//! [`FileWatcher`] handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};

/// How often directories without an inotify watch are polled.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A worker's doorbell: rung by the watcher, waited on by the worker between attempts.
#[derive(Debug, Default)]
pub struct Wakeup {
    rung: Mutex<bool>,
    bell: Condvar,
}

impl Wakeup {
    /// Wakes the waiting worker (or the next wait, if none waits now).
    pub fn wake(&self) {
        *self.rung.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.bell.notify_all();
    }

    /// Waits up to `timeout` (`None`: until woken); true when woken rather than timed out.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut rung = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *rung {
                *rung = false;
                return true;
            }
            rung = match deadline {
                None => self.bell.wait(rung).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.bell
                        .wait_timeout(rung, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

type FileState = Option<(u64, u64, Option<SystemTime>)>;

fn file_state(path: &Path) -> FileState {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.len(), m.modified().ok()))
}

/// A token file to watch and the worker it wakes.
pub type Watched = (PathBuf, Arc<Wakeup>);

/// What the watcher thread hears: file events, and the reloader's additions and removals.
enum Message {
    Event(notify::Result<notify::Event>),
    Add(Vec<Watched>),
    /// Forget the files of these workers (compared by doorbell).
    Remove(Vec<Arc<Wakeup>>),
}

/// The running watcher: a reload adds the files of new tokens and removes those of
/// removed ones, without restarting it.
#[derive(Clone, Debug)]
pub struct FileWatcher {
    to_thread: mpsc::Sender<Message>,
}

impl FileWatcher {
    /// Watches `files` too.
    pub fn add(&self, files: Vec<Watched>) {
        if !files.is_empty() {
            let _ = self.to_thread.send(Message::Add(files));
        }
    }

    /// Stops watching the files of the workers with these doorbells.
    pub fn remove(&self, wakeups: Vec<Arc<Wakeup>>) {
        if !wakeups.is_empty() {
            let _ = self.to_thread.send(Message::Remove(wakeups));
        }
    }
}

/// Starts the watcher for `files` (token file, worker to wake); returns at once.
pub fn spawn_file_watcher(files: Vec<Watched>) -> std::io::Result<FileWatcher> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    std::thread::Builder::new()
        .name("token-file-watcher".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let watcher = notify::recommended_watcher(move |event| {
                let _ = events.send(Message::Event(event));
            });
            let watcher = match watcher {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!("cannot watch token files ({e}); polling them every 2s");
                    None
                }
            };
            let mut watch = Watch {
                watcher,
                by_dir: HashMap::new(),
                polled: HashMap::new(),
            };
            watch.add(files);
            watch.run(rx);
        })?;
    Ok(FileWatcher { to_thread: tx })
}

/// The watcher thread's state.
struct Watch {
    watcher: Option<notify::RecommendedWatcher>,
    by_dir: HashMap<PathBuf, Vec<Watched>>,
    /// Directories without a watch, with the last seen state of their files.
    polled: HashMap<PathBuf, Vec<FileState>>,
}

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

impl Watch {
    fn try_watch(&mut self, dir: &Path) -> bool {
        self.watcher
            .as_mut()
            .is_some_and(|w| w.watch(dir, RecursiveMode::NonRecursive).is_ok())
    }

    fn add(&mut self, files: Vec<Watched>) {
        let mut new_dirs = Vec::new();
        for (file, wakeup) in files {
            let dir = dir_of(&file);
            let entry = self.by_dir.entry(dir.clone()).or_default();
            if entry.is_empty() {
                new_dirs.push(dir.clone());
            }
            entry.push((file.clone(), wakeup));
            if let Some(seen) = self.polled.get_mut(&dir) {
                seen.push(file_state(&file));
            }
        }
        for dir in new_dirs {
            if !self.try_watch(&dir) {
                log::debug!("polling token directory {}", dir.display());
                let seen = self.by_dir[&dir]
                    .iter()
                    .map(|(f, _)| file_state(f))
                    .collect();
                self.polled.insert(dir, seen);
            }
        }
    }

    fn remove(&mut self, wakeups: &[Arc<Wakeup>]) {
        let gone = |w: &Arc<Wakeup>| wakeups.iter().any(|g| Arc::ptr_eq(g, w));
        let mut empty = Vec::new();
        for (dir, files) in self.by_dir.iter_mut() {
            if let Some(seen) = self.polled.get_mut(dir) {
                let mut i = 0;
                seen.retain(|_| {
                    i += 1;
                    !gone(&files[i - 1].1)
                });
            }
            files.retain(|(_, w)| !gone(w));
            if files.is_empty() {
                empty.push(dir.clone());
            }
        }
        for dir in empty {
            self.by_dir.remove(&dir);
            if self.polled.remove(&dir).is_none() {
                if let Some(w) = self.watcher.as_mut() {
                    let _ = w.unwatch(&dir);
                }
            }
        }
    }

    fn wake_dir(&self, dir: &Path) {
        if let Some(files) = self.by_dir.get(dir) {
            files.iter().for_each(|(_, w)| w.wake());
        }
    }

    fn run(&mut self, rx: mpsc::Receiver<Message>) {
        loop {
            match rx.recv_timeout(POLL_INTERVAL) {
                Ok(Message::Add(files)) => self.add(files),
                Ok(Message::Remove(wakeups)) => self.remove(&wakeups),
                // notify's inotify backend also reports every open(2): each worker reading
                // its token file would wake every worker of the directory, which read theirs
                // and wake everyone again, a storm that kept two cores busy. Only changes count.
                Ok(Message::Event(Ok(event))) if !changes_a_file(&event.kind) => {}
                Ok(Message::Event(Ok(event))) => {
                    for path in &event.paths {
                        self.wake_dir(path);
                        if let Some(parent) = path.parent() {
                            self.wake_dir(parent);
                        }
                    }
                }
                Ok(Message::Event(Err(e))) => log::debug!("token file watch error: {e}"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.poll();
        }
    }

    /// Checks the directories without a watch, and watches those that now exist.
    fn poll(&mut self) {
        if self.polled.is_empty() {
            return;
        }
        let mut now_watched = Vec::new();
        for (dir, seen) in self.polled.iter_mut() {
            let files = &self.by_dir[dir];
            for ((file, wakeup), last) in files.iter().zip(seen.iter_mut()) {
                let now = file_state(file);
                if now != *last {
                    *last = now;
                    wakeup.wake();
                }
            }
            if dir.is_dir() {
                now_watched.push(dir.clone());
            }
        }
        for dir in now_watched {
            if self.try_watch(&dir) {
                self.polled.remove(&dir);
                self.wake_dir(&dir);
            }
        }
    }
}

/// Whether an event may mean a token file changed: not a mere open, read or close after
/// reading.
fn changes_a_file(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vte-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_wakeup_rung_before_the_wait_is_not_lost() {
        let w = Wakeup::default();
        w.wake();
        assert!(w.wait(Some(Duration::from_secs(5))));
        let started = Instant::now();
        assert!(!w.wait(Some(Duration::from_millis(30))));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn reading_a_token_file_wakes_no_one() {
        let dir = temp_dir("reads");
        let file = dir.join("a.token");
        std::fs::write(&file, "hvs.A").unwrap();
        let wakeup = Arc::new(Wakeup::default());
        spawn_file_watcher(vec![(file.clone(), wakeup.clone())]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        while wakeup.wait(Some(Duration::from_millis(50))) {}
        for _ in 0..3 {
            std::fs::read_to_string(&file).unwrap();
        }
        assert!(
            !wakeup.wait(Some(Duration::from_millis(300))),
            "woken by reads"
        );
        std::fs::write(&file, "hvs.B").unwrap();
        assert!(
            wakeup.wait(Some(Duration::from_secs(2))),
            "a write still wakes"
        );
    }

    #[test]
    fn writes_renames_and_late_directories_wake_their_workers() {
        let dir = temp_dir("events");
        let in_place = dir.join("a.token");
        let renamed = dir.join("b.token");
        let late_dir = dir.join("late");
        let late = late_dir.join("c.token");
        let wakeups: Vec<Arc<Wakeup>> = (0..3).map(|_| Arc::new(Wakeup::default())).collect();
        spawn_file_watcher(vec![
            (in_place.clone(), wakeups[0].clone()),
            (renamed.clone(), wakeups[1].clone()),
            (late.clone(), wakeups[2].clone()),
        ])
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let drain = |w: &Wakeup| while w.wait(Some(Duration::from_millis(50))) {};
        wakeups.iter().for_each(|w| drain(w));

        std::fs::write(&in_place, "hvs.A").unwrap();
        assert!(
            wakeups[0].wait(Some(Duration::from_secs(2))),
            "in-place write"
        );

        let tmp = dir.join(".b.tmp");
        std::fs::write(&tmp, "hvs.B").unwrap();
        drain(&wakeups[1]);
        std::fs::rename(&tmp, &renamed).unwrap();
        assert!(
            wakeups[1].wait(Some(Duration::from_secs(2))),
            "atomic rename"
        );

        std::fs::create_dir_all(&late_dir).unwrap();
        std::fs::write(&late, "hvs.C").unwrap();
        assert!(
            wakeups[2].wait(Some(Duration::from_secs(5))),
            "directory made later"
        );
    }

    #[test]
    fn files_added_later_wake_and_removed_ones_do_not() {
        let dir = temp_dir("reload");
        let kept = dir.join("kept.token");
        let added = dir.join("added.token");
        let (kept_bell, added_bell) = (Arc::new(Wakeup::default()), Arc::new(Wakeup::default()));
        let watcher = spawn_file_watcher(vec![(kept.clone(), kept_bell.clone())]).unwrap();
        watcher.add(vec![(added.clone(), added_bell.clone())]);
        std::thread::sleep(Duration::from_millis(100));
        let drain = |w: &Wakeup| while w.wait(Some(Duration::from_millis(50))) {};
        std::fs::write(&added, "hvs.A").unwrap();
        assert!(
            added_bell.wait(Some(Duration::from_secs(2))),
            "an added file wakes"
        );
        watcher.remove(vec![added_bell.clone()]);
        std::thread::sleep(Duration::from_millis(100));
        drain(&added_bell);
        drain(&kept_bell);
        std::fs::write(&added, "hvs.B").unwrap();
        std::fs::write(&kept, "hvs.K").unwrap();
        assert!(
            kept_bell.wait(Some(Duration::from_secs(2))),
            "the kept file still wakes"
        );
        assert!(
            !added_bell.wait(Some(Duration::from_millis(300))),
            "a removed file wakes no one"
        );
    }
}
