//! Who gets a connection slot. Open connections are capped in all
//! (`max_connections`) and per client address (`max_connections_per_ip`;
//! an IPv6 client is its /64). When a slot is wanted and none is free, a
//! connection that is idle — waiting for a request to begin, on keep-alive
//! or fresh — is closed to make room: first one of the newcomer's own
//! address when that address is at its cap, otherwise one of the address
//! holding the most connections, the longest idle first. Only when no
//! connection is idle is the newcomer turned away. A connection busy with
//! a request (or a TLS handshake) is never closed for another.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::debug;

use crate::metrics;

/// How many connections past the limits may be getting their `overloaded`
/// answer at once; beyond that they are closed unanswered.
const TURN_AWAY_ANSWERS_MAX: usize = 32;

/// A client address as the per-address cap counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    /// The first 64 bits: one host usually holds a whole /64.
    V6(u64),
}

impl Client {
    fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4.into()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.into()),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

struct Connection {
    client: Client,
    /// Since when it waits for a request to begin; `None` while busy.
    idle_since: Option<Instant>,
    /// The socket, to shut down when it is closed to make room.
    socket: TcpStream,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Connection>,
    per_client: HashMap<Client, usize>,
    turning_away: usize,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Connection> {
        let connection = self.open.remove(&id)?;
        if let Some(count) = self.per_client.get_mut(&connection.client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&connection.client);
            }
        }
        Some(connection)
    }

    /// The idle connection to close: of `only` if given, else of the client
    /// with the most connections; the longest idle first.
    fn victim(&self, only: Option<Client>) -> Option<u64> {
        self.open
            .iter()
            .filter(|(_, c)| only.is_none_or(|client| c.client == client))
            .filter_map(|(id, c)| Some((self.per_client[&c.client], std::cmp::Reverse(c.idle_since?), *id)))
            .max()
            .map(|(_, _, id)| id)
    }

    fn close(&mut self, id: u64, why: &str) {
        if let Some(connection) = self.remove(id) {
            debug!("closing an idle connection to make room ({why})");
            metrics::global().http.connections_closed_idle.inc();
            let _ = connection.socket.shutdown(Shutdown::Both);
        }
    }
}

/// The slots of one server.
pub(crate) struct Admission {
    max_connections: usize,
    max_per_client: usize,
    table: Mutex<Table>,
}

/// What becomes of a new connection.
pub(crate) enum Verdict {
    Serve(Ticket),
    /// Answered `overloaded`, then closed.
    TurnAway(TurnAwayTicket),
    /// Closed unanswered: too many are being turned away already.
    Close,
}

impl Admission {
    pub(crate) fn new(max_connections: usize, max_per_client: usize) -> Arc<Admission> {
        Arc::new(Admission { max_connections, max_per_client, table: Mutex::default() })
    }

    /// Decides on the connection `tcp` from `peer`; a connection served
    /// keeps a handle on its socket here, to be shut down if it must go.
    pub(crate) fn admit(self: &Arc<Self>, tcp: &TcpStream, peer: SocketAddr) -> Verdict {
        let client = Client::of(peer.ip());
        let mut table = self.table.lock().unwrap();
        let mine = table.per_client.get(&client).copied().unwrap_or(0);
        let room = if mine >= self.max_per_client {
            table.victim(Some(client)).map(|id| table.close(id, "this address is at its cap")).is_some()
        } else if table.open.len() >= self.max_connections {
            table.victim(None).map(|id| table.close(id, "all connections are taken")).is_some()
        } else {
            true
        };
        if !room {
            if table.turning_away >= TURN_AWAY_ANSWERS_MAX {
                return Verdict::Close;
            }
            table.turning_away += 1;
            debug!("{peer}: turned away ({mine} connections from this address, {} in all)", table.open.len());
            return Verdict::TurnAway(TurnAwayTicket(Arc::clone(self)));
        }
        let socket = match tcp.try_clone() {
            Ok(socket) => socket,
            Err(err) => {
                log::warn!("{peer}: closed: no descriptor for the connection ({err})");
                return Verdict::Close;
            }
        };
        let id = table.next_id;
        table.next_id += 1;
        table.open.insert(id, Connection { client, idle_since: None, socket });
        *table.per_client.entry(client).or_default() += 1;
        Verdict::Serve(Ticket { admission: Arc::clone(self), id })
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let table = self.table.lock().unwrap();
        (table.open.len(), table.turning_away)
    }
}

/// A connection's slot, given back when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
}

impl Ticket {
    /// The connection waits for a request to begin: it may be closed to make room.
    pub(crate) fn idle(&self) {
        if let Some(connection) = self.admission.table.lock().unwrap().open.get_mut(&self.id) {
            connection.idle_since = Some(Instant::now());
        }
    }

    /// A request began: the connection is not to be closed for another.
    /// False when it was closed to make room in the meantime.
    pub(crate) fn busy(&self) -> bool {
        match self.admission.table.lock().unwrap().open.get_mut(&self.id) {
            Some(connection) => {
                connection.idle_since = None;
                true
            }
            None => false,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.table.lock().unwrap().remove(self.id);
    }
}

/// A place among the connections being turned away.
pub(crate) struct TurnAwayTicket(Arc<Admission>);

impl Drop for TurnAwayTicket {
    fn drop(&mut self) {
        self.0.table.lock().unwrap().turning_away -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

    use super::*;

    /// A connected pair: the server's side and the client's.
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (listener.accept().unwrap().0, client)
    }

    fn peer(last: u8) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), 40000))
    }

    fn serve(verdict: Verdict) -> Ticket {
        match verdict {
            Verdict::Serve(ticket) => ticket,
            _ => panic!("not served"),
        }
    }

    fn closed(client: &mut TcpStream) -> bool {
        matches!(client.read(&mut [0; 1]), Ok(0))
    }

    #[test]
    fn clients_are_told_apart_by_address_and_ipv6_by_prefix() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::of(a.into()), Client::of(b.into()));
        assert_ne!(Client::of(a.into()), Client::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Client::of(mapped.into()), Client::of(Ipv4Addr::new(10, 0, 0, 1).into()));
    }

    #[test]
    fn an_idle_connection_makes_room_a_busy_one_never() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let admission = Admission::new(2, 10);
        let (socket, mut first_client) = pair(&listener);
        let first = serve(admission.admit(&socket, peer(1)));
        let (socket, _second_client) = pair(&listener);
        let second = serve(admission.admit(&socket, peer(2)));
        // Both busy: the third is turned away.
        let (socket, _) = pair(&listener);
        assert!(matches!(admission.admit(&socket, peer(3)), Verdict::TurnAway(_)));
        assert_eq!(admission.counts(), (2, 0), "the turned-away place is given back");
        // One idle: it is closed for the newcomer, and learns so when it wakes.
        first.idle();
        let (socket, _) = pair(&listener);
        let _third = serve(admission.admit(&socket, peer(3)));
        assert!(closed(&mut first_client));
        assert!(!first.busy());
        drop(first);
        assert_eq!(admission.counts(), (2, 0), "the closed one's slot is not given back twice");
        assert!(second.busy());
    }

    #[test]
    fn the_address_with_most_connections_gives_way() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let admission = Admission::new(4, 10);
        let mut held = Vec::new();
        for last in [1, 1, 1, 2] {
            let (socket, client) = pair(&listener);
            let ticket = serve(admission.admit(&socket, peer(last)));
            ticket.idle();
            held.push((ticket, client));
        }
        let (socket, _) = pair(&listener);
        let _newcomer = serve(admission.admit(&socket, peer(3)));
        // The longest idle of address 1 (three connections) went, not address 2's.
        assert!(!held[0].0.busy());
        assert!(held[1..].iter().all(|(ticket, _)| ticket.busy()));
    }

    #[test]
    fn an_address_at_its_cap_makes_room_among_its_own_or_is_turned_away() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let admission = Admission::new(100, 2);
        let (socket, _) = pair(&listener);
        let other = serve(admission.admit(&socket, peer(9)));
        other.idle();
        let (a, _) = pair(&listener);
        let (b, _) = pair(&listener);
        let first = serve(admission.admit(&a, peer(1)));
        let _second = serve(admission.admit(&b, peer(1)));
        let (socket, _) = pair(&listener);
        let turned_away = admission.admit(&socket, peer(1));
        assert!(matches!(turned_away, Verdict::TurnAway(_)));
        assert!(other.busy(), "another address's idle connection is not taken");
        first.idle();
        let (socket, _) = pair(&listener);
        let _third = serve(admission.admit(&socket, peer(1)));
        assert!(!first.busy());
        drop(turned_away);
    }

    #[test]
    fn past_the_turn_away_bound_connections_are_closed_unanswered() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let admission = Admission::new(1, 1);
        let (socket, _) = pair(&listener);
        let _busy = serve(admission.admit(&socket, peer(1)));
        let mut answering = Vec::new();
        for _ in 0..TURN_AWAY_ANSWERS_MAX {
            let (socket, _) = pair(&listener);
            answering.push(admission.admit(&socket, peer(2)));
        }
        let (socket, _) = pair(&listener);
        assert!(matches!(admission.admit(&socket, peer(2)), Verdict::Close));
        answering.clear();
        let (socket, _) = pair(&listener);
        assert!(matches!(admission.admit(&socket, peer(2)), Verdict::TurnAway(_)));
    }
}
