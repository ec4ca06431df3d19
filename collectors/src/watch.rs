//! One watcher thread for every token file: it wakes the workers whose file may have changed.
//!
//! inotify watches each token file's directory (not the file: an atomic rename replaces
//! the file's inode, and Kubernetes swaps a `..data` symlink beside it), so the idle cost
//! is zero whatever the number of tokens. An event in a directory wakes every worker with
//! a file there; each re-reads its file and carries on if the token is unchanged.
//! Directories that cannot be watched (missing at start, inotify limits) are polled every
//! two seconds by the same thread.

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

/// Starts the watcher for `files` (token file, worker to wake); returns at once.
pub fn spawn_file_watcher(files: Vec<(PathBuf, Arc<Wakeup>)>) -> std::io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut by_dir: HashMap<PathBuf, Vec<(PathBuf, Arc<Wakeup>)>> = HashMap::new();
    for (file, wakeup) in files {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        by_dir.entry(dir).or_default().push((file, wakeup));
    }
    std::thread::Builder::new()
        .name("token-file-watcher".into())
        .stack_size(256 * 1024)
        .spawn(move || watch_loop(by_dir))?;
    Ok(())
}

fn watch_loop(by_dir: HashMap<PathBuf, Vec<(PathBuf, Arc<Wakeup>)>>) {
    let (tx, rx) = mpsc::channel();
    let mut watcher = match notify::recommended_watcher(tx) {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!("cannot watch token files ({e}); polling them every 2s");
            None
        }
    };
    // Directories without a watch, with the last seen state of their files.
    let mut polled: HashMap<PathBuf, Vec<FileState>> = HashMap::new();
    let try_watch = |dir: &Path, watcher: &mut Option<notify::RecommendedWatcher>| {
        watcher
            .as_mut()
            .is_some_and(|w| w.watch(dir, RecursiveMode::NonRecursive).is_ok())
    };
    for (dir, files) in &by_dir {
        if !try_watch(dir, &mut watcher) {
            log::debug!("polling token directory {}", dir.display());
            polled.insert(
                dir.clone(),
                files.iter().map(|(f, _)| file_state(f)).collect(),
            );
        }
    }
    let wake_dir = |dir: &Path| {
        if let Some(files) = by_dir.get(dir) {
            files.iter().for_each(|(_, w)| w.wake());
        }
    };
    loop {
        match rx.recv_timeout(POLL_INTERVAL) {
            // notify's inotify backend also reports every open(2): each worker reading
            // its token file would wake every worker of the directory, which read theirs
            // and wake everyone again, a storm that kept two cores busy. Only changes count.
            Ok(Ok(event)) if !changes_a_file(&event.kind) => {}
            Ok(Ok(event)) => {
                for path in &event.paths {
                    wake_dir(path);
                    if let Some(parent) = path.parent() {
                        wake_dir(parent);
                    }
                }
            }
            Ok(Err(e)) => log::debug!("token file watch error: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if polled.is_empty() {
            continue;
        }
        let mut now_watched = Vec::new();
        for (dir, seen) in polled.iter_mut() {
            let files = &by_dir[dir];
            for ((file, wakeup), last) in files.iter().zip(seen.iter_mut()) {
                let now = file_state(file);
                if now != *last {
                    *last = now;
                    wakeup.wake();
                }
            }
            if dir.is_dir() && try_watch(dir, &mut watcher) {
                now_watched.push(dir.clone());
            }
        }
        for dir in now_watched {
            polled.remove(&dir);
            wake_dir(&dir);
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
}
