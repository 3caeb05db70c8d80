//! A TURN client speaking raw STUN (the `stun`/`turn` crates' message types) over
//! UDP, TCP or TLS: Allocate with REST credentials, CreatePermission, ChannelBind,
//! Send indications and ChannelData, as an attacker's or a browser's client would.

use std::net::SocketAddr;
use std::time::Duration;

use stun::agent::TransactionId;
use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, Getter, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND, Message, MessageType, Method,
    Setter,
};
use stun::textattrs::TextAttribute;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::proto::PROTO_UDP;
use turn::proto::channum::ChannelNumber;
use turn::proto::data::Data;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;

use super::gateway::WAIT;

/// A byte stream to the server (TCP or TLS).
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A TURN client session: the server's nonce and realm after the first 401.
pub struct Client {
    udp: Option<UdpSocket>,
    tcp: Option<Box<dyn Stream>>,
    server: SocketAddr,
    username: String,
    password: String,
    nonce: String,
    /// The realm the server announced (after [`Client::challenge`]).
    pub realm: String,
}

impl Client {
    pub async fn udp(server: SocketAddr, username: &str, password: &str) -> Client {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Client {
            udp: Some(udp),
            tcp: None,
            server,
            username: username.into(),
            password: password.into(),
            nonce: String::new(),
            realm: String::new(),
        }
    }

    pub async fn tcp(server: SocketAddr, username: &str, password: &str) -> Client {
        let tcp = TcpStream::connect(server).await.expect("connect");
        Client::stream(server, Box::new(tcp), username, password)
    }

    pub fn stream(
        server: SocketAddr,
        stream: Box<dyn Stream>,
        username: &str,
        password: &str,
    ) -> Client {
        Client {
            udp: None,
            tcp: Some(stream),
            server,
            username: username.into(),
            password: password.into(),
            nonce: String::new(),
            realm: String::new(),
        }
    }

    pub async fn exchange(&mut self, request: Message) -> Message {
        let mut buf = vec![0u8; 2048];
        let n = if let Some(udp) = &self.udp {
            udp.send_to(&request.raw, self.server).await.expect("send");
            tokio::time::timeout(WAIT, udp.recv(&mut buf))
                .await
                .expect("TURN reply timeout")
                .expect("recv")
        } else {
            let tcp = self.tcp.as_mut().expect("tcp");
            tcp.write_all(&request.raw).await.expect("write");
            tokio::time::timeout(WAIT, tcp.read_exact(&mut buf[..20]))
                .await
                .expect("timeout")
                .expect("read");
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            tcp.read_exact(&mut buf[20..20 + len])
                .await
                .expect("read body");
            20 + len
        };
        let mut m = Message::new();
        m.unmarshal_binary(&buf[..n]).expect("STUN reply");
        assert_eq!(m.transaction_id, request.transaction_id);
        m
    }

    pub fn build(&self, method: Method, extra: Vec<Box<dyn Setter>>, signed: bool) -> Message {
        let mut setters: Vec<Box<dyn Setter>> = vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        setters.extend(extra);
        if signed {
            setters.push(Box::new(TextAttribute::new(
                ATTR_USERNAME,
                self.username.clone(),
            )));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())));
            setters.push(Box::new(TextAttribute::new(ATTR_NONCE, self.nonce.clone())));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                self.username.clone(),
                self.realm.clone(),
                self.password.clone(),
            )));
        }
        let mut m = Message::new();
        m.build(&setters).expect("build");
        m
    }

    /// Unauthenticated Allocate: the server answers 401 with a nonce and realm.
    pub async fn challenge(&mut self) {
        let request = self.build(
            METHOD_ALLOCATE,
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })],
            false,
        );
        let reply = self.exchange(request).await;
        assert_eq!(code(&reply), Some(401));
        self.nonce = TextAttribute::get_from_as(&reply, ATTR_NONCE)
            .expect("nonce")
            .text;
        self.realm = TextAttribute::get_from_as(&reply, ATTR_REALM)
            .expect("realm")
            .text;
    }

    pub async fn allocate(&mut self) -> Message {
        let request = self.build(
            METHOD_ALLOCATE,
            vec![Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            })],
            true,
        );
        self.exchange(request).await
    }

    pub async fn permit(&mut self, peer: &str) -> Message {
        let peer: SocketAddr = peer.parse().expect("peer");
        let attr = PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        };
        let request = self.build(METHOD_CREATE_PERMISSION, vec![Box::new(attr)], true);
        self.exchange(request).await
    }
}

/// The error code of an error response.
pub fn code(m: &Message) -> Option<u16> {
    if m.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok()?;
    Some(e.code.0)
}

impl Client {
    /// Writes raw bytes to the server.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Some(udp) = &self.udp {
            udp.send_to(bytes, self.server).await.expect("send");
        } else {
            let tcp = self.tcp.as_mut().expect("tcp");
            tcp.write_all(bytes).await.expect("write");
        }
    }

    /// A Send indication carrying `data` to `peer` (no response, RFC 8656 §11).
    pub async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()) as Box<dyn Setter>,
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
            Box::new(Data(data.to_vec())),
        ])
        .expect("build send indication");
        self.send_raw(&m.raw).await;
    }

    /// ChannelBind `number` to `peer`.
    pub async fn channel_bind(&mut self, peer: SocketAddr, number: u16) -> Message {
        let request = self.build(
            METHOD_CHANNEL_BIND,
            vec![
                Box::new(ChannelNumber(number)),
                Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }),
            ],
            true,
        );
        self.exchange(request).await
    }

    /// ChannelData on `number` (UDP: unpadded).
    pub async fn channel_data(&mut self, number: u16, data: &[u8]) {
        let mut frame = number.to_be_bytes().to_vec();
        frame.extend_from_slice(&u16::try_from(data.len()).expect("short").to_be_bytes());
        frame.extend_from_slice(data);
        self.send_raw(&frame).await;
    }

    /// The next datagram from the server within `within` (UDP clients only).
    pub async fn next_datagram(&mut self, within: Duration) -> Option<Vec<u8>> {
        let udp = self.udp.as_ref().expect("udp client");
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(within, udp.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }
}
