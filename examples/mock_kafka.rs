//! Benchmark helper (used by `scripts/bench-capture`): librdkafka's in-process mock cluster,
//! hosted in a process of its own so a capture can produce into it over TCP without the
//! broker being the bottleneck.
//!
//! Usage: `mock_kafka [--partitions N] [--rtt-ms MS] [--admin-proxy] TOPIC...`
//!
//! Creates a one-broker mock cluster (`--rtt-ms`: the broker answers each request that much
//! later, standing in for a network round trip and a replicated `acks=all` write), creates each TOPIC with N partitions (default 3) and
//! replication factor 1, prints `bootstrap_servers()` as the first line of stdout, then parks
//! until killed.
//!
//! The mock broker does not implement the CreateTopics admin API, and `driftless capture`
//! calls it on every start (`kafka::ensure_topics`); against the bare mock that call times
//! out and the capture retries forever. `--admin-proxy` therefore also starts a small Kafka
//! protocol proxy in front of the broker and prints `proxy=HOST:PORT` as the second line. The
//! proxy relays every request unchanged except that it
//! - adds CreateTopics (versions 2-4) to the broker's ApiVersions response,
//! - answers CreateTopics itself with TOPIC_ALREADY_EXISTS for every topic (they were created
//!   above), and
//! - rewrites the broker's port in Metadata responses to its own, so clients keep talking to
//!   the proxy after bootstrapping, and sets the controller id there to the broker's (the mock
//!   leaves it 0, which names no broker, so admin requests would wait for a controller forever).
//!
//! Produce and fetch traffic is relayed frame by frame (one read and one write per frame).

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use rdkafka::mocking::MockCluster;

const API_METADATA: i16 = 3;
const API_API_VERSIONS: i16 = 18;
const API_CREATE_TOPICS: i16 = 19;
const TOPIC_ALREADY_EXISTS: i16 = 36;

fn main() -> anyhow::Result<()> {
    let mut partitions = 3;
    let mut proxy = false;
    let mut rtt_ms = 0u64;
    let mut topics = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--partitions" => {
                partitions = args.next().context("--partitions needs a value")?.parse()?;
            }
            "--rtt-ms" => rtt_ms = args.next().context("--rtt-ms needs a value")?.parse()?,
            "--admin-proxy" => proxy = true,
            _ => topics.push(a),
        }
    }
    let cluster = MockCluster::new(1)?;
    if rtt_ms > 0 {
        cluster.broker_round_trip_time(1, std::time::Duration::from_millis(rtt_ms))?;
    }
    for t in &topics {
        cluster.create_topic(t, partitions, 1)?;
    }
    let bootstrap = cluster.bootstrap_servers();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{bootstrap}")?;
    if proxy {
        let upstream = bootstrap
            .split(',')
            .next()
            .context("mock cluster has no bootstrap server")?
            .to_string();
        let upstream_port: i32 = upstream
            .rsplit(':')
            .next()
            .context("bootstrap server without a port")?
            .parse()?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        writeln!(out, "proxy={addr}")?;
        let rewrite = (upstream_port, i32::from(addr.port()));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    if let Err(e) = relay(client, &upstream, rewrite) {
                        eprintln!("proxy connection ended: {e:#}");
                    }
                });
            }
        });
    }
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}

/// Reads one size-prefixed Kafka frame (without its size); `None` at a clean EOF.
fn read_frame(r: &mut impl Read) -> anyhow::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = i32::from_be_bytes(len);
    if !(0..=512 * 1024 * 1024).contains(&len) {
        bail!("bad frame length {len}");
    }
    let mut buf = vec![0u8; len as usize + 4];
    buf[..4].copy_from_slice(&len.to_be_bytes());
    r.read_exact(&mut buf[4..])?;
    Ok(Some(buf))
}

fn relay(client: TcpStream, upstream: &str, rewrite: (i32, i32)) -> anyhow::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let to_client = Arc::new(Mutex::new(client.try_clone()?));
    let pending: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();

    // Responses: broker → client.
    let (mut server_r, to_client2, pending2) = (
        BufReader::with_capacity(256 * 1024, server.try_clone()?),
        to_client.clone(),
        pending.clone(),
    );
    let responses = std::thread::spawn(move || -> anyhow::Result<()> {
        while let Some(mut frame) = read_frame(&mut server_r)? {
            let corr = i32::from_be_bytes(frame[4..8].try_into()?);
            let req = pending2.lock().expect("lock").remove(&corr);
            match req {
                Some((API_API_VERSIONS, v)) => frame = patch_api_versions(&frame, v)?,
                Some((API_METADATA, v)) => patch_metadata(&mut frame, v, rewrite)?,
                _ => {}
            }
            to_client2.lock().expect("lock").write_all(&frame)?;
        }
        Ok(())
    });

    // Requests: client → broker (CreateTopics answered here).
    let mut client_r = BufReader::with_capacity(256 * 1024, client);
    let mut server_w = server;
    while let Some(frame) = read_frame(&mut client_r)? {
        if frame.len() < 12 {
            bail!("short request");
        }
        let api = i16::from_be_bytes([frame[4], frame[5]]);
        let ver = i16::from_be_bytes([frame[6], frame[7]]);
        let corr = i32::from_be_bytes(frame[8..12].try_into()?);
        if api == API_CREATE_TOPICS {
            let resp = create_topics_response(&frame, ver, corr)?;
            to_client.lock().expect("lock").write_all(&resp)?;
            continue;
        }
        pending.lock().expect("lock").insert(corr, (api, ver));
        server_w.write_all(&frame)?;
    }
    let _ = server_w.shutdown(std::net::Shutdown::Both);
    let _ = responses.join();
    Ok(())
}

/// A cursor over a Kafka message.
struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl Cur<'_> {
    fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        let s = self
            .b
            .get(self.p..self.p + n)
            .context("truncated message")?;
        self.p += n;
        Ok(s)
    }
    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    fn uvarint(&mut self) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("varint too long")
    }
    /// Classic string (i16 length, -1 = null).
    fn string(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let n = self.i16()?;
        if n < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(n as usize)?.to_vec()))
    }
    /// Compact string (uvarint length + 1, 0 = null).
    fn compact_string(&mut self) -> anyhow::Result<()> {
        let n = self.uvarint()?;
        if n > 0 {
            self.take(n as usize - 1)?;
        }
        Ok(())
    }
    fn tagged_fields(&mut self) -> anyhow::Result<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let len = self.uvarint()?;
            self.take(len as usize)?;
        }
        Ok(())
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Adds CreateTopics v2-4 to an ApiVersions response (header v0: size, correlation id).
fn patch_api_versions(frame: &[u8], version: i16) -> anyhow::Result<Vec<u8>> {
    let mut c = Cur { b: frame, p: 8 };
    if c.i16()? != 0 {
        return Ok(frame.to_vec()); // an error response: leave it alone
    }
    let entry_len = if version >= 3 { 7 } else { 6 };
    let count_at = c.p;
    let count = if version >= 3 {
        c.uvarint()?.saturating_sub(1)
    } else {
        c.i32()? as u64
    };
    let entries_at = c.p;
    let mut has = false;
    for _ in 0..count {
        let e = c.take(entry_len)?;
        has |= i16::from_be_bytes([e[0], e[1]]) == API_CREATE_TOPICS;
    }
    if has {
        return Ok(frame.to_vec());
    }
    let entries_end = c.p;
    let mut out = Vec::with_capacity(frame.len() + 8);
    out.extend_from_slice(&frame[..count_at]);
    if version >= 3 {
        put_uvarint(&mut out, count + 2);
    } else {
        out.extend_from_slice(&(count as i32 + 1).to_be_bytes());
    }
    out.extend_from_slice(&frame[entries_at..entries_end]);
    out.extend_from_slice(&API_CREATE_TOPICS.to_be_bytes());
    out.extend_from_slice(&2i16.to_be_bytes());
    out.extend_from_slice(&4i16.to_be_bytes());
    if version >= 3 {
        out.push(0); // no tagged fields
    }
    out.extend_from_slice(&frame[entries_end..]);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Rewrites the broker port in a Metadata response, in place.
fn patch_metadata(frame: &mut [u8], version: i16, (from, to): (i32, i32)) -> anyhow::Result<()> {
    let flexible = version >= 9;
    let mut ports = Vec::new();
    let mut ids = Vec::new();
    let mut controller_at = None;
    {
        let mut c = Cur { b: frame, p: 8 };
        if flexible {
            c.tagged_fields()?; // response header v1
        }
        if version >= 3 {
            c.i32()?; // throttle_time_ms
        }
        let brokers = if flexible {
            c.uvarint()?.saturating_sub(1)
        } else {
            c.i32()?.max(0) as u64
        };
        for _ in 0..brokers {
            ids.push(c.i32()?); // node_id
            if flexible {
                c.compact_string()?;
            } else {
                c.string()?;
            }
            let at = c.p;
            if c.i32()? == from {
                ports.push(at);
            }
            if version >= 1 {
                if flexible {
                    c.compact_string()?;
                } else {
                    c.string()?;
                }
            }
            if flexible {
                c.tagged_fields()?;
            }
        }
        if version >= 2 {
            if flexible {
                c.compact_string()?; // cluster_id
            } else {
                c.string()?;
            }
        }
        if version >= 1 {
            let at = c.p;
            if !ids.contains(&c.i32()?) {
                controller_at = Some(at);
            }
        }
    }
    for at in ports {
        frame[at..at + 4].copy_from_slice(&to.to_be_bytes());
    }
    // The mock never sets its controller id (it stays 0, and broker ids start at 1), so admin
    // requests, which go to the controller, would wait for it forever: name the first broker.
    if let (Some(at), Some(id)) = (controller_at, ids.first()) {
        frame[at..at + 4].copy_from_slice(&id.to_be_bytes());
    }
    Ok(())
}

/// Answers CreateTopics v0-4 (request header v1) with TOPIC_ALREADY_EXISTS for every topic.
fn create_topics_response(frame: &[u8], version: i16, corr: i32) -> anyhow::Result<Vec<u8>> {
    if !(0..=4).contains(&version) {
        bail!("CreateTopics v{version} is not handled by the proxy");
    }
    let mut c = Cur { b: frame, p: 12 };
    c.string()?; // client_id
    let n = c.i32()?.max(0);
    let mut names = Vec::new();
    for _ in 0..n {
        names.push(c.string()?.unwrap_or_default());
        c.i32()?; // num_partitions
        c.i16()?; // replication_factor
        for _ in 0..c.i32()?.max(0) {
            c.i32()?;
            for _ in 0..c.i32()?.max(0) {
                c.i32()?;
            }
        }
        for _ in 0..c.i32()?.max(0) {
            c.string()?;
            c.string()?;
        }
    }
    let mut out = vec![0u8; 4];
    out.extend_from_slice(&corr.to_be_bytes());
    if version >= 2 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle_time_ms
    }
    out.extend_from_slice(&(names.len() as i32).to_be_bytes());
    for name in &names {
        out.extend_from_slice(&(name.len() as i16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&TOPIC_ALREADY_EXISTS.to_be_bytes());
        if version >= 1 {
            out.extend_from_slice(&(-1i16).to_be_bytes()); // error_message: null
        }
    }
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}
