//! A job's output as the executors hand it to the [`Reporter`]: chunks cut into lines
//! ([`Lines`]), and files followed as they grow ([`FileTail`]: the Docker executor's output
//! files on a bind mount, the Slurm executor's on the shared file system).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use dstack_core::run::{Reporter, Stream};

/// Lines longer than this are reported in pieces.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Cuts a stream's chunks into lines (with their newline); lines longer than [`MAX_LINE`]
/// in pieces; what is left at the end as a last line.
pub(crate) struct Lines {
    stream: Stream,
    partial: Vec<u8>,
}

impl Lines {
    pub(crate) fn new(stream: Stream) -> Lines {
        Lines {
            stream,
            partial: Vec::new(),
        }
    }

    /// Bytes pushed but not reported yet (the start of a line).
    pub(crate) fn pending(&self) -> usize {
        self.partial.len()
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8], reporter: &dyn Reporter) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, rest) = bytes.split_at(i + 1);
                    if self.partial.is_empty() {
                        reporter.log(self.stream, line);
                    } else {
                        self.partial.extend_from_slice(line);
                        reporter.log(self.stream, &self.partial);
                        self.partial.clear();
                    }
                    bytes = rest;
                }
                None if window.len() == room => {
                    // A full piece: cut it before a character it would split, which starts
                    // the next piece instead (each piece stays valid UTF-8 text).
                    self.partial.extend_from_slice(window);
                    let cut = self.partial.len() - unfinished_char(&self.partial);
                    reporter.log(self.stream, &self.partial[..cut]);
                    self.partial.drain(..cut);
                    bytes = &bytes[room..];
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
    }

    pub(crate) fn flush(&mut self, reporter: &dyn Reporter) {
        if !self.partial.is_empty() {
            reporter.log(self.stream, &self.partial);
            self.partial.clear();
        }
    }

    /// Forgets the unfinished line.
    fn clear(&mut self) {
        self.partial.clear();
    }
}

/// How many bytes at the end of `bytes` begin a UTF-8 character that is not complete (0 to 3).
fn unfinished_char(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        match b {
            // A continuation byte: its lead byte is further back.
            0x80..=0xbf => {}
            // A lead byte: the character needs 2, 3 or 4 bytes in all.
            0xc0..=0xff => {
                let needs = match b {
                    0xf0..=0xff => 4,
                    0xe0..=0xef => 3,
                    _ => 2,
                };
                return if needs > back { back } else { 0 };
            }
            // ASCII: everything before it is complete.
            _ => return 0,
        }
    }
    0
}

/// How many bytes one `read` syscall asks for.
const CHUNK: usize = 256 * 1024;

/// What one [`FileTail::read`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// Bytes read.
    pub bytes: u64,
    /// The file is shorter than what was read of it already: something truncated it.
    pub truncated: bool,
}

/// A file followed as it grows: what is new is read from where the last read stopped and
/// reported line by line. Memory is bounded: one chunk buffer and at most one unfinished line
/// ([`MAX_LINE`]).
pub(crate) struct FileTail {
    path: PathBuf,
    /// Opened once and kept (`false`: opened at every read, for shared file systems whose
    /// clients see other hosts' writes only at an open).
    keep_open: bool,
    /// Opened for writing too ([`FileTail::releasing`]).
    writable: bool,
    file: Option<File>,
    /// Bytes read from the file.
    offset: u64,
    lines: Lines,
    buffer: Vec<u8>,
}

impl FileTail {
    /// Follows `path` (which may not exist yet) from byte `offset`.
    pub(crate) fn new(path: PathBuf, stream: Stream, offset: u64, keep_open: bool) -> FileTail {
        FileTail {
            path,
            keep_open,
            writable: false,
            file: None,
            offset,
            lines: Lines::new(stream),
            buffer: Vec::new(),
        }
    }

    /// Opens the file (once) for writing too, so that [`FileTail::release_reported`] can give
    /// back its blocks (a file that cannot be opened so is read only).
    pub(crate) fn releasing(mut self) -> FileTail {
        self.keep_open = true;
        self.writable = true;
        self
    }

    fn open(&self) -> io::Result<File> {
        if self.writable {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
            {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
                other => return other,
            }
        }
        File::open(&self.path)
    }

    /// Opens the file now, once for all reads: for a file in a folder that someone else (a
    /// container's user) may change later. The final component must not be a symbolic link
    /// (`O_NOFOLLOW`) and the file must be a regular file (a FIFO put there would block the
    /// reader: the open does not wait, `O_NONBLOCK`).
    pub(crate) fn open_now(&mut self) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let flags = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).custom_flags(flags);
        let file = if self.writable {
            match options.clone().write(true).open(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => options.open(&self.path),
                other => other,
            }
        } else {
            options.open(&self.path)
        }?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        self.keep_open = true;
        self.file = Some(file);
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the file reported so far: where a later reader starts for nothing to be
    /// reported twice.
    pub(crate) fn reported(&self) -> u64 {
        self.offset - self.lines.pending() as u64
    }

    /// Reads what is new, at most about `limit` bytes, and reports its complete lines.
    /// A missing file is no error (nothing written yet).
    pub(crate) fn read(&mut self, limit: u64, reporter: &dyn Reporter) -> io::Result<Read> {
        let opened;
        let file = match (&self.file, self.keep_open) {
            (Some(file), true) => file,
            _ => match self.open() {
                Ok(file) => {
                    if self.keep_open {
                        self.file.insert(file)
                    } else {
                        opened = file;
                        &opened
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Read::default()),
                Err(e) => return Err(e),
            },
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            return Ok(Read {
                bytes: 0,
                truncated: true,
            });
        }
        if len == self.offset {
            return Ok(Read::default());
        }
        // As large as what there is to read, up to a chunk: a tail that is followed for long
        // but gets little (the Slurm executor follows every running job at once) holds little.
        let want = usize::try_from((len - self.offset).min(limit.max(1)))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        if self.buffer.len() < want {
            self.buffer.resize(want, 0);
        }
        let mut total = 0u64;
        while total < limit {
            let n = match file.read_at(&mut self.buffer, self.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += n as u64;
            total += n as u64;
            self.lines.push(&self.buffer[..n], reporter);
        }
        if !self.keep_open {
            // Opened at every read, so read seldom: the buffer is not worth keeping.
            self.buffer = Vec::new();
        }
        Ok(Read {
            bytes: total,
            truncated: false,
        })
    }

    /// Starts again from the beginning of the file (after it was truncated), forgetting the
    /// unfinished line.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
        self.lines.clear();
    }

    /// Reports the last, unfinished line.
    pub(crate) fn finish(&mut self, reporter: &dyn Reporter) {
        self.lines.flush(reporter);
    }

    /// Frees the disk blocks of what was reported (a hole in the file: its length and the
    /// offsets stay as they are), up to a multiple of 4 KiB. `Ok(false)` when the file system
    /// cannot punch holes.
    pub(crate) fn release_reported(&mut self, from: u64) -> io::Result<(u64, bool)> {
        let to = self.reported() & !4095;
        let Some(file) = &self.file else {
            return Ok((from, true));
        };
        if to <= from {
            return Ok((from, true));
        }
        match punch_hole(file, from, to - from) {
            Ok(()) => Ok((to, true)),
            // Not on this file system, or the file could be opened for reading only.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EOPNOTSUPP | nix::libc::EBADF)
                ) =>
            {
                Ok((from, false))
            }
            Err(e) => Err(e),
        }
    }
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let to_off =
        |n: u64| i64::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        to_off(offset)?,
        to_off(len)?,
    )
    .map_err(io::Error::from)
}

/// A reporter that keeps what it is given, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Collect(pub(crate) std::sync::Mutex<Vec<(Stream, Vec<u8>)>>);

#[cfg(test)]
impl Reporter for Collect {
    fn started(&self, _: &str) {}
    fn log(&self, stream: Stream, bytes: &[u8]) {
        self.0.lock().expect("lock").push((stream, bytes.to_vec()));
    }
    fn note(&self, _: &str) {}
}

#[cfg(test)]
impl Collect {
    pub(crate) fn texts(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_lines() {
        let r = Collect::default();
        let mut lines = Lines::new(Stream::Stdout);
        lines.push(b"one\ntw", &r);
        lines.push(b"o\nthree", &r);
        assert_eq!(lines.pending(), 5);
        lines.push(b"\n\nfour", &r);
        lines.flush(&r);
        assert_eq!(r.texts(), ["one\n", "two\n", "three\n", "\n", "four"]);
    }

    #[test]
    fn long_lines_come_in_pieces() {
        let r = Collect::default();
        let mut lines = Lines::new(Stream::Stderr);
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        lines.push(&long[..100], &r);
        lines.push(&long[100..], &r);
        lines.push(b"\n", &r);
        let got = r.0.lock().expect("lock");
        assert_eq!(
            got.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 11]
        );
        assert!(got.iter().all(|(s, _)| *s == Stream::Stderr));
    }

    #[test]
    fn long_lines_are_not_cut_inside_a_character() {
        for (ch, len) in [("é", 2), ("€", 3), ("😀", 4)] {
            for before in 1..len {
                let r = Collect::default();
                let mut lines = Lines::new(Stream::Stdout);
                // The character straddles the end of the first piece by `before` bytes.
                let mut line = "x".repeat(MAX_LINE - before);
                line.push_str(ch);
                line.push_str(&"y".repeat(MAX_LINE));
                line.push('\n');
                for chunk in line.as_bytes().chunks(1000) {
                    lines.push(chunk, &r);
                }
                let got = r.0.lock().expect("lock");
                let pieces: Vec<&[u8]> = got.iter().map(|(_, b)| b.as_slice()).collect();
                assert!(
                    pieces.iter().all(|p| std::str::from_utf8(p).is_ok()),
                    "{ch} {before}: a piece is not UTF-8"
                );
                assert_eq!(pieces[0].len(), MAX_LINE - before, "{ch} {before}");
                assert_eq!(
                    pieces.concat(),
                    line.as_bytes(),
                    "{ch} {before}: bytes kept"
                );
            }
        }
        // Bytes that are not UTF-8 at all still come in full pieces.
        let r = Collect::default();
        let mut lines = Lines::new(Stream::Stdout);
        lines.push(&vec![0x80; MAX_LINE + 1], &r);
        lines.flush(&r);
        let got = r.0.lock().expect("lock");
        assert_eq!(
            got.iter().map(|(_, b)| b.len()).collect::<Vec<_>>(),
            [MAX_LINE, 1]
        );
    }

    #[test]
    fn a_tail_follows_a_growing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        let r = Collect::default();
        let mut tail = FileTail::new(path.clone(), Stream::Stdout, 0, true);
        // Not there yet: nothing, no error.
        assert_eq!(tail.read(u64::MAX, &r).expect("read"), Read::default());
        let mut file = std::fs::File::create(&path).expect("create");
        let mut write = |text: &str| {
            use std::io::Write as _;
            file.write_all(text.as_bytes()).expect("write");
        };
        write("one\ntw");
        assert_eq!(tail.read(u64::MAX, &r).expect("read").bytes, 6);
        assert_eq!(tail.reported(), 4);
        write("o\n");
        tail.read(u64::MAX, &r).expect("read");
        assert_eq!(tail.reported(), 8);
        // A reader that starts where this one stopped reports nothing twice.
        write("three");
        let mut again = FileTail::new(path.clone(), Stream::Stdout, tail.reported(), false);
        tail.read(u64::MAX, &r).expect("read");
        tail.finish(&r);
        assert_eq!(r.texts(), ["one\n", "two\n", "three"]);
        let r2 = Collect::default();
        again.read(u64::MAX, &r2).expect("read");
        again.finish(&r2);
        assert_eq!(r2.texts(), ["three"]);
    }

    /// The Slurm executor follows every running job at once: a tail holds no chunk buffer
    /// while there is nothing new, and one opened at every read keeps none between reads.
    #[test]
    fn a_tail_holds_little_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stdout");
        std::fs::write(&path, "").expect("create");
        let r = Collect::default();
        let mut kept = FileTail::new(path.clone(), Stream::Stdout, 0, true);
        let mut reopened = FileTail::new(path.clone(), Stream::Stdout, 0, false);
        for tail in [&mut kept, &mut reopened] {
            assert_eq!(tail.read(u64::MAX, &r).expect("read"), Read::default());
            assert_eq!(tail.buffer.capacity(), 0, "nothing to read, no buffer");
        }
        std::fs::write(&path, "a short line\n").expect("write");
        assert_eq!(kept.read(u64::MAX, &r).expect("read").bytes, 13);
        assert!(kept.buffer.capacity() < 1024, "{}", kept.buffer.capacity());
        std::fs::write(&path, "a short line\n".repeat(100_000)).expect("write");
        assert_eq!(reopened.read(u64::MAX, &r).expect("read").bytes, 1_300_000);
        assert_eq!(reopened.buffer.capacity(), 0, "freed after the read");
        assert_eq!(r.texts().len(), 100_001);
    }

    #[test]
    fn truncation_is_seen_and_holes_keep_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stderr");
        let r = Collect::default();
        let line = format!("{}\n", "y".repeat(99));
        std::fs::write(&path, line.repeat(1000)).expect("write");
        let mut tail = FileTail::new(path.clone(), Stream::Stderr, 0, true).releasing();
        assert_eq!(tail.read(u64::MAX, &r).expect("read").bytes, 100_000);
        // The blocks read are given back; what follows is read as before.
        let (released, supported) = tail.release_reported(0).expect("punch");
        if supported {
            assert_eq!(released, 98_304);
            let blocks =
                std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).expect("meta"));
            assert!(blocks <= 16, "{blocks} blocks of 512 bytes left");
        }
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            100_000,
            "the length stays"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"last\n"))
            .expect("append");
        tail.read(u64::MAX, &r).expect("read");
        assert_eq!(r.texts().len(), 1001);
        assert_eq!(r.texts().last().map(String::as_str), Some("last\n"));

        // `> /dev/stderr` in a job truncates the file under the reader.
        std::fs::write(&path, "again\n").expect("truncate");
        let read = tail.read(u64::MAX, &r).expect("read");
        assert!(read.truncated);
        tail.restart();
        tail.read(u64::MAX, &r).expect("read");
        assert_eq!(r.texts().last().map(String::as_str), Some("again\n"));
    }
}
