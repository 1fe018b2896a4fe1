//! The network modes, smoltcp on the first network device (`ip=A.B.C.D/len` for all of them):
//!
//! - `net-echo`: answer ARP, ping, UDP echo (port 7) and TCP echo (port 7) forever.
//! - `net-ping peer=IP count=N`: N echo requests, one RTT line each, `net: N/N replies`.
//! - `net-tcp-server`: on port 9000, read one connection to its end, reply with the FNV-1a 64 of
//!   what came (`fnv64 0x... bytes N`), close, power off.
//! - `net-tcp-client peer=IP bytes=N`: send N bytes of `pattern::Stream` to `peer:9000`, read
//!   the reply, compare with its own checksum: `net: sent N bytes, checksum 0x... matches`.
//! - `net-bcast id=K peers=M`: UDP broadcasts to port 5000 until it has heard the other M-1 ids
//!   (and they have heard everyone): `net: heard all peers`.

use super::net::Net;
use super::stack::{now_us, Ratio, Stack, Take};
use super::{die, done, param, param_u64};
use core::fmt::Write as _;
use lgtest::args::{parse_cidr, parse_ipv4};
use lgtest::devices::mac_text;
use lgtest::digest::Fnv64;
use lgtest::mode::Mode;
use lgtest::pattern::Stream;
use lgtest::text::FixedStr;
use smoltcp::iface::SocketHandle;
use smoltcp::phy::Device as _;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Duration;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, IpEndpoint, Ipv4Address};

const ECHO_PORT: u16 = 7;
const TCP_PORT: u16 = 9000;
const BCAST_PORT: u16 = 5000;
/// Seed of the TCP modes' byte stream.
const STREAM_SEED: u64 = 0x6c67_7465_7374;

/// The bulk receiver's window: what 8 receive buffers of the peer hold, so a window's worth of
/// segments in flight always finds a free buffer (a sharenet drops what finds none).
const BULK_RX: usize = 8 * 1460;
const BULK_TX: usize = 64 * 1024;
static BULK_RX_BUF: Take<[u8; BULK_RX]> = Take::new([0; BULK_RX]);
static BULK_TX_BUF: Take<[u8; BULK_TX]> = Take::new([0; BULK_TX]);
static SMALL_RX: Take<[[u8; 4096]; 4]> = Take::new([[0; 4096]; 4]);
static SMALL_TX: Take<[[u8; 4096]; 4]> = Take::new([[0; 4096]; 4]);
static UDP_META: Take<[[udp::PacketMetadata; 8]; 2]> =
    Take::new([[udp::PacketMetadata::EMPTY; 8]; 2]);
static UDP_DATA: Take<[[u8; 8192]; 2]> = Take::new([[0; 8192]; 2]);
static ICMP_META: Take<[[icmp::PacketMetadata; 8]; 2]> =
    Take::new([[icmp::PacketMetadata::EMPTY; 8]; 2]);
static ICMP_DATA: Take<[[u8; 4096]; 2]> = Take::new([[0; 4096]; 2]);

pub fn run(mode: Mode) -> ! {
    let mut s = bring_up();
    match mode {
        Mode::NetEcho => echo(&mut s),
        Mode::NetPing => ping(&mut s),
        Mode::NetTcpServer => tcp_server(&mut s),
        Mode::NetTcpClient => tcp_client(&mut s),
        _ => bcast(&mut s),
    }
}

fn text(b: &[u8]) -> &str {
    core::str::from_utf8(b).unwrap_or("?")
}

fn addr(ip: [u8; 4]) -> IpAddress {
    Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]).into()
}

fn ip_param(key: &str) -> [u8; 4] {
    let v = param(key).unwrap_or_else(|| die(format_args!("{key}=A.B.C.D is missing")));
    parse_ipv4(v).unwrap_or_else(|| die(format_args!("bad {key}={}", text(v))))
}

fn bring_up() -> Stack {
    let v = param("ip").unwrap_or_else(|| die(format_args!("ip=A.B.C.D/len is missing")));
    let (ip, prefix) = parse_cidr(v).unwrap_or_else(|| die(format_args!("bad ip={}", text(v))));
    let Some(net) = Net::open(0) else {
        super::print_devices();
        die(format_args!("net: no usable network device"))
    };
    super::print_devices();
    let (slot, mac, nocsum) = (net.slot, net.mac, net.nocsum);
    let s = Stack::up(net, ip, prefix);
    println!(
        "net: up {}.{}.{}.{} {} slot {slot}{}",
        ip[0],
        ip[1],
        ip[2],
        ip[3],
        text(&mac_text(&mac)),
        if nocsum { " nocsum" } else { "" }
    );
    s
}

fn tcp_socket(s: &mut Stack, rx: &'static mut [u8], tx: &'static mut [u8]) -> SocketHandle {
    let sock = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    s.sockets.add(sock)
}

fn stats_line(s: &Stack) {
    let (rx, tx) = (&s.phy.net.rx.stats, &s.phy.net.tx.stats);
    println!(
        "net: stats rx {} frames {} bytes ({} dropped), tx {} frames {} sends ({} undelivered), {} irqs, {} exits",
        rx.rx_frames,
        rx.rx_bytes,
        rx.rx_dropped,
        tx.tx_frames,
        tx.tx_sends,
        tx.tx_undelivered,
        crate::irq::count(s.phy.net.irq),
        crate::shared::exits().load(core::sync::atomic::Ordering::Relaxed)
    );
}

// ------------------------------------------------------------------------------------------------

fn echo(s: &mut Stack) -> ! {
    let [meta, _] = UDP_META.take();
    let [data, _] = UDP_DATA.take();
    let (m_rx, m_tx) = meta.split_at_mut(4);
    let (d_rx, d_tx) = data.split_at_mut(4096);
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(m_rx, d_rx),
        udp::PacketBuffer::new(m_tx, d_tx),
    );
    if u.bind(ECHO_PORT).is_err() {
        die(format_args!("net: cannot bind UDP port {ECHO_PORT}"));
    }
    let udp_h = s.sockets.add(u);
    let [r0, r1, _, _] = SMALL_RX.take();
    let [t0, t1, _, _] = SMALL_TX.take();
    let tcp_h = [tcp_socket(s, r0, t0), tcp_socket(s, r1, t1)];
    let mut served = [false; 2];
    let (mut udp_n, mut tcp_n) = (0u64, 0u64);
    println!("net: echo on UDP and TCP port {ECHO_PORT}");
    loop {
        s.poll();
        let u = s.sockets.get_mut::<udp::Socket>(udp_h);
        let mut buf = [0u8; 1500];
        while let Ok((n, meta)) = u.recv_slice(&mut buf) {
            let _ = u.send_slice(buf.get(..n).unwrap_or(&[]), meta.endpoint);
            udp_n += 1;
            println!("net: udp echo {udp_n}: {n} bytes to {}", meta.endpoint);
        }
        for (i, h) in tcp_h.iter().enumerate() {
            let t = s.sockets.get_mut::<tcp::Socket>(*h);
            if !t.is_open() {
                if served[i] {
                    println!("net: tcp echo connection closed");
                    served[i] = false;
                }
                let _ = t.listen(ECHO_PORT);
                continue;
            }
            if t.is_active() && !served[i] {
                served[i] = true;
                tcp_n += 1;
                if let Some(ep) = t.remote_endpoint() {
                    println!("net: tcp echo connection {tcp_n} from {ep}");
                }
            }
            while t.can_recv() && t.can_send() {
                let room = t.send_capacity() - t.send_queue();
                let mut chunk = [0u8; 1024];
                let want = room.min(chunk.len());
                let Ok(n) = t.recv_slice(chunk.get_mut(..want).unwrap_or(&mut [])) else {
                    break;
                };
                if n == 0 {
                    break;
                }
                let _ = t.send_slice(chunk.get(..n).unwrap_or(&[]));
            }
            if !t.may_recv() && t.state() == tcp::State::CloseWait && t.send_queue() == 0 {
                t.close();
            }
        }
        s.poll();
        s.wait(Duration::from_secs(1));
    }
}

// ------------------------------------------------------------------------------------------------

fn ping(s: &mut Stack) -> ! {
    let peer = ip_param("peer");
    let count = param_u64("count", 3);
    let [m0, m1] = ICMP_META.take();
    let [d0, d1] = ICMP_DATA.take();
    let mut sock = icmp::Socket::new(
        icmp::PacketBuffer::new(&mut m0[..], &mut d0[..]),
        icmp::PacketBuffer::new(&mut m1[..], &mut d1[..]),
    );
    let ident = 0x4c47;
    if sock.bind(icmp::Endpoint::Ident(ident)).is_err() {
        die(format_args!("net: cannot bind the ICMP socket"));
    }
    let h = s.sockets.add(sock);
    let caps = s.phy.capabilities();
    let target = addr(peer);
    let (mut replies, mut min, mut max, mut sum) = (0u64, u64::MAX, 0u64, 0u64);
    for seq in 0..count {
        let seq_no = seq as u16;
        let payload = [0x5au8; 56];
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data: &payload,
        };
        let sock = s.sockets.get_mut::<icmp::Socket>(h);
        match sock.send(repr.buffer_len(), target) {
            Ok(buf) => repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps.checksum),
            Err(e) => die(format_args!("net: ping send: {e:?}")),
        }
        let start = now_us();
        let mut got = None;
        while now_us() - start < 3_000_000 && got.is_none() {
            s.poll();
            let sock = s.sockets.get_mut::<icmp::Socket>(h);
            while let Ok((data, from)) = sock.recv() {
                let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply {
                    seq_no: r,
                    ident: i,
                    ..
                }) = Icmpv4Repr::parse(&pkt, &caps.checksum)
                {
                    if r == seq_no && i == ident && from == target {
                        got = Some(now_us() - start);
                    }
                }
            }
            if got.is_none() {
                s.wait(Duration::from_millis(100));
            }
        }
        match got {
            Some(us) => {
                replies += 1;
                min = min.min(us);
                max = max.max(us);
                sum += us;
                println!(
                    "net: reply from {target} seq={seq} time={} ms",
                    Ratio(us, 1000)
                );
            }
            None => println!("net: no reply from {target} seq={seq}"),
        }
    }
    stats_line(s);
    if let Some(avg) = sum.checked_div(replies) {
        println!(
            "net: rtt min/avg/max {}/{}/{} ms",
            Ratio(min, 1000),
            Ratio(avg, 1000),
            Ratio(max, 1000)
        );
    }
    println!("net: {replies}/{count} replies");
    if replies == count {
        done()
    } else {
        die(format_args!("net: {replies}/{count} replies"))
    }
}

// ------------------------------------------------------------------------------------------------

/// What the server answers: `fnv64 0x<16 hex> bytes <n>\n`.
fn reply_text(fnv: u64, bytes: u64) -> FixedStr<64> {
    let mut t = FixedStr::new();
    let _ = writeln!(t, "fnv64 {fnv:#018x} bytes {bytes}");
    t
}

fn tcp_server(s: &mut Stack) -> ! {
    let h = tcp_socket(s, BULK_RX_BUF.take(), &mut SMALL_TX.take()[0]);
    // A client that vanishes must not keep us retransmitting for ever.
    s.sockets
        .get_mut::<tcp::Socket>(h)
        .set_timeout(Some(Duration::from_secs(10)));
    if s.sockets
        .get_mut::<tcp::Socket>(h)
        .listen(TCP_PORT)
        .is_err()
    {
        die(format_args!("net: cannot listen on {TCP_PORT}"));
    }
    println!("net: tcp server listening on port {TCP_PORT}");
    let mut fnv = Fnv64::new();
    let (mut bytes, mut start, mut replied, mut seen) = (0u64, 0u64, false, false);
    let mut last_report = 0u64;
    loop {
        s.poll();
        let t = s.sockets.get_mut::<tcp::Socket>(h);
        if t.is_active() && !seen {
            seen = true;
            start = now_us();
            if let Some(ep) = t.remote_endpoint() {
                println!("net: tcp connection from {ep}");
            }
        }
        while t.can_recv() {
            let r = t.recv(|buf| {
                fnv.update(buf);
                (buf.len(), buf.len())
            });
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes += n as u64,
            }
        }
        if bytes >= last_report + (4 << 20) {
            last_report = bytes;
            println!("net: received {} MiB", bytes >> 20);
        }
        if seen && !replied && !t.may_recv() {
            let ns = (now_us() - start).max(1);
            let reply = reply_text(fnv.value(), bytes);
            if t.send_slice(reply.as_bytes()).is_ok() {
                replied = true;
                t.close();
                println!(
                    "net: received {bytes} bytes fnv64 {:#018x} in {} ms ({} MB/s)",
                    fnv.value(),
                    ns / 1000,
                    Ratio(bytes, ns)
                );
            }
        }
        if replied && matches!(t.state(), tcp::State::Closed | tcp::State::TimeWait) {
            stats_line(s);
            println!("net: tcp server done");
            done();
        }
        s.wait(Duration::from_secs(1));
    }
}

fn tcp_client(s: &mut Stack) -> ! {
    let peer = ip_param("peer");
    let total = param_u64("bytes", 1 << 20);
    let h = tcp_socket(s, &mut SMALL_RX.take()[0], BULK_TX_BUF.take());
    // The client receives one short reply: acknowledge it (and the FIN) at once.
    s.sockets.get_mut::<tcp::Socket>(h).set_ack_delay(None);
    let remote = IpEndpoint::new(addr(peer), TCP_PORT);
    let mut port = 49152u16;
    let mut stream = Stream::new(STREAM_SEED);
    let mut fnv = Fnv64::new();
    let (mut sent, mut closed, mut established) = (0u64, false, None::<u64>);
    let mut reply = FixedStr::<64>::new();
    let deadline = now_us() + 600_000_000;
    let mut attempts = 0;
    let mut last_report = 0u64;
    loop {
        if now_us() > deadline {
            die(format_args!("net: tcp client timed out after {sent} bytes"));
        }
        s.poll();
        let t = s.sockets.get_mut::<tcp::Socket>(h);
        if !t.is_open() && established.is_none() {
            // Not connected yet (or refused: the server may not be listening yet): try again.
            if attempts > 0 {
                super::stack::nap(200_000);
            }
            attempts += 1;
            if attempts > 100 {
                die(format_args!("net: cannot connect to {remote}"));
            }
            port = port.wrapping_add(1).max(49152);
            let cx = s.iface.context();
            let t = s.sockets.get_mut::<tcp::Socket>(h);
            if let Err(e) = t.connect(cx, remote, port) {
                die(format_args!("net: connect: {e:?}"));
            }
            continue;
        }
        if t.may_send() && established.is_none() {
            established = Some(now_us());
            println!("net: connected to {remote}, sending {total} bytes");
        }
        while t.may_send() && sent < total {
            let left = total - sent;
            let r = t.send(|buf| {
                let n = (buf.len() as u64).min(left) as usize;
                let chunk = buf.get_mut(..n).unwrap_or(&mut []);
                stream.fill(chunk);
                fnv.update(chunk);
                (n, n)
            });
            match r {
                Ok(0) | Err(_) => break,
                Ok(n) => sent += n as u64,
            }
        }
        if sent >= last_report + (4 << 20) {
            last_report = sent;
            println!("net: sent {} MiB", sent >> 20);
        }
        if sent == total && !closed && t.may_send() {
            t.close();
            closed = true;
        }
        while t.can_recv() {
            let mut b = [0u8; 64];
            match t.recv_slice(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = reply.write_str(text(b.get(..n).unwrap_or(&[])));
                }
            }
        }
        let finished = closed && !t.may_recv();
        if finished || (established.is_some() && !t.is_open()) {
            break;
        }
        s.wait(Duration::from_secs(1));
    }
    let ns = (now_us() - established.unwrap_or(0)).max(1);
    // Acknowledge the server's FIN before powering off, or it waits for that ACK forever.
    let linger = now_us();
    while now_us() - linger < 1_000_000 {
        s.poll();
        let t = s.sockets.get_mut::<tcp::Socket>(h);
        if matches!(t.state(), tcp::State::Closed | tcp::State::TimeWait) {
            break;
        }
        s.wait(Duration::from_millis(10));
    }
    s.poll();
    stats_line(s);
    let want = reply_text(fnv.value(), sent);
    println!(
        "net: sent {sent} bytes in {} ms ({} MB/s)",
        ns / 1000,
        Ratio(sent, ns)
    );
    if sent == total && reply.as_str() == want.as_str() {
        println!(
            "net: sent {sent} bytes, checksum {:#018x} matches",
            fnv.value()
        );
        done()
    }
    die(format_args!(
        "net: sent {sent} of {total} bytes, checksum {:#018x}, server said '{}'",
        fnv.value(),
        reply.as_str().trim_end()
    ))
}

// ------------------------------------------------------------------------------------------------

fn bcast(s: &mut Stack) -> ! {
    let id = param_u64("id", 0);
    let peers = param_u64("peers", 2);
    if id >= 64 || !(2..=64).contains(&peers) {
        die(format_args!("net: want id < 64 and 2 <= peers <= 64"));
    }
    let [m, _] = UDP_META.take();
    let [d, _] = UDP_DATA.take();
    let (m_rx, m_tx) = m.split_at_mut(4);
    let (d_rx, d_tx) = d.split_at_mut(4096);
    let mut u = udp::Socket::new(
        udp::PacketBuffer::new(m_rx, d_rx),
        udp::PacketBuffer::new(m_tx, d_tx),
    );
    if u.bind(BCAST_PORT).is_err() {
        die(format_args!("net: cannot bind UDP port {BCAST_PORT}"));
    }
    let h = s.sockets.add(u);
    let everyone = IpEndpoint::new(Ipv4Address::BROADCAST.into(), BCAST_PORT);
    let (mut heard, mut done_ids) = (0u64, 0u64);
    let (mut all_at, mut next_send, mut sends) = (None::<u64>, 0u64, 0u64);
    let mut said_done = false;
    let start = now_us();
    loop {
        let now = now_us();
        if now - start > 120_000_000 {
            die(format_args!(
                "net: heard {} of {} peers (ids {heard:#x})",
                heard.count_ones(),
                peers - 1
            ));
        }
        s.poll();
        let u = s.sockets.get_mut::<udp::Socket>(h);
        let mut buf = [0u8; 64];
        while let Ok((n, _)) = u.recv_slice(&mut buf) {
            // "bcast id=K done=D"
            let msg = buf.get(..n).unwrap_or(&[]);
            let (Some(k), Some(dn)) = (
                lgtest::args::value(msg, "id").and_then(lgtest::args::parse_u64),
                lgtest::args::value(msg, "done").and_then(lgtest::args::parse_u64),
            ) else {
                continue;
            };
            if k >= 64 || k == id {
                continue;
            }
            if heard & (1 << k) == 0 {
                println!("net: heard id {k}");
            }
            heard |= 1 << k;
            if dn != 0 {
                done_ids |= 1 << k;
            }
        }
        let have_all = u64::from(heard.count_ones()) >= peers - 1;
        if have_all && all_at.is_none() {
            all_at = Some(now);
            // Tell the others at once.
            next_send = now;
            println!(
                "net: heard all peers ({} others, after {sends} broadcasts)",
                peers - 1
            );
        }
        if now >= next_send {
            let mut msg = FixedStr::<64>::new();
            let _ = write!(msg, "bcast id={id} done={}", u8::from(have_all));
            if u.send_slice(msg.as_bytes(), everyone).is_ok() {
                sends += 1;
                said_done |= have_all;
            }
            next_send = now + 200_000;
        }
        // Done when every peer has heard everyone too and we have said so ourselves (or, failing
        // that, 10 s after we had heard them all).
        if let Some(t) = all_at {
            if (said_done && done_ids & heard == heard) || now - t > 10_000_000 {
                s.poll();
                stats_line(s);
                println!(
                    "net: bcast done: heard {:#x}, peers done {:#x}",
                    heard, done_ids
                );
                done();
            }
        }
        s.poll();
        s.wait(Duration::from_millis(100));
    }
}
