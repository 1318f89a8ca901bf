//! Kernel files (procfs, sysfs, cgroupfs) read again and again: each read
//! from offset 0 shows the file's current content, so a file is opened once
//! and re-read with `pread`, with no path walk, open or close per reading.

use std::path::Path;

/// A kernel file kept open.
pub struct Reread {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Reread {
    pub fn open(path: impl AsRef<Path>) -> Self {
        Reread { file: std::fs::File::open(path).ok(), buf: vec![0; 4096] }
    }

    /// The file's content now, or `None` if it could not be opened or read.
    pub fn read(&mut self) -> Option<&str> {
        let len = reread(self.file.as_ref()?, &mut self.buf).ok()?;
        std::str::from_utf8(&self.buf[..len]).ok()
    }
}

/// Reads `file` from offset 0 into `buf` (grown as needed, never shrunk):
/// the number of bytes now valid at its start.
///
/// One `pread` per reading: a read that leaves room in `buf` has the whole
/// file. The files read so (cgroupfs files, `/proc/stat`, sysfs
/// attributes, and regular files in tests) are made whole by one `show`
/// (a single seq_file record, or an attribute) and handed out as far as
/// the caller's buffer allows; asking again at the end would only cost a
/// second system call that returns 0 (half of the agent's reads before).
pub fn reread(file: &std::fs::File, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt as _;
    let mut len = 0;
    loop {
        match file.read_at(&mut buf[len..], len as u64)? {
            0 => return Ok(len),
            n => {
                len += n;
                if len < buf.len() {
                    return Ok(len);
                }
                buf.resize(len * 2, 0);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_shows_its_content_now_at_any_length() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, "first\n").unwrap();
        let mut f = Reread::open(&path);
        assert_eq!(f.read(), Some("first\n"));
        // Longer than the initial buffer: grown, read whole.
        let long = "x".repeat(10_000);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(f.read(), Some(long.as_str()));
        std::fs::write(&path, "2\n").unwrap();
        assert_eq!(f.read(), Some("2\n"), "shorter again: only what the file holds now");
        assert!(Reread::open(tmp.path().join("absent")).read().is_none());
        let mut stat = Reread::open("/proc/stat");
        assert!(stat.read().unwrap().starts_with("cpu "));
    }
}
