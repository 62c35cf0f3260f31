// A one-off load generator for `ferrolite serve` (docs/benchmarks.md, "Gateway cost per
// request at 10 deployments"): std only, built with `rustc --edition 2021 -O -o load gateway_load.rs`.
// Usage: load PORT CONCURRENCY REQUESTS SERVER_PID. Each of CONCURRENCY threads holds one
// keep-alive connection and sends non-streaming chat completions (20 to warm up, then
// REQUESTS / CONCURRENCY); prints requests/s, p50/p99 and the server's CPU per request (utime +
// stime of SERVER_PID from /proc, delta over the timed requests).
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn cpu_ticks(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let port: u16 = a[1].parse().unwrap();
    let conc: usize = a[2].parse().unwrap();
    let total: usize = a[3].parse().unwrap();
    let pid = a[4].clone();
    let body = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about the sea."}],"temperature":0.7,"max_tokens":64}"#;
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(), body);
    let req = Arc::new(req.into_bytes());
    let per = total / conc;
    let barrier = Arc::new(Barrier::new(conc + 1));
    let mut handles = vec![];
    for _ in 0..conc {
        let req = req.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 65536];
            let mut lat = Vec::with_capacity(per);
            let mut one = |s: &mut TcpStream, lat: Option<&mut Vec<u32>>| {
                let t = Instant::now();
                s.write_all(&req).unwrap();
                let mut n = 0;
                loop {
                    let r = s.read(&mut buf[n..]).unwrap();
                    assert!(r > 0, "closed");
                    n += r;
                    if let Some(h) = find(&buf[..n], b"\r\n\r\n") {
                        let head = std::str::from_utf8(&buf[..h]).unwrap();
                        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                        let cl: usize = head.lines().find_map(|l| {
                            let l = l.to_ascii_lowercase();
                            l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        }).unwrap();
                        while n < h + 4 + cl { n += s.read(&mut buf[n..]).unwrap(); }
                        break;
                    }
                }
                if let Some(lat) = lat { lat.push(t.elapsed().as_micros() as u32); }
            };
            for _ in 0..20 { one(&mut s, None); } // warm
            barrier.wait();
            for _ in 0..per { one(&mut s, Some(&mut lat)); }
            lat
        }));
    }
    barrier.wait();
    let c0 = cpu_ticks(&pid);
    let t0 = Instant::now();
    let mut lat: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let wall = t0.elapsed();
    let c1 = cpu_ticks(&pid);
    lat.sort_unstable();
    let n = lat.len();
    let tick_us = 1e6 / 100.0;
    println!(
        "c={conc} n={n} rps={:.0} p50={:.2}ms p99={:.2}ms cpu/req={:.1}us",
        n as f64 / wall.as_secs_f64(),
        lat[n / 2] as f64 / 1e3,
        lat[n * 99 / 100] as f64 / 1e3,
        (c1 - c0) as f64 * tick_us / n as f64
    );

}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}
