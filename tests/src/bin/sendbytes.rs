//! `sendbytes ADDR N`: connects, sends exactly N bytes, half-closes, and
//! waits for the peer to close, so every byte has crossed the wire when it
//! exits. (iperf3 `-n` can drop what is still buffered when it closes.)
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        eprintln!("usage: sendbytes ADDR BYTES");
        std::process::exit(2);
    };
    let run = || -> std::io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        let chunk = vec![0x5a_u8; 1 << 16];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len());
            s.write_all(&chunk[..k])?;
            left -= k;
        }
        s.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("sendbytes: {e}");
        std::process::exit(1);
    }
}
