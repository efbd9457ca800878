//! A fault-injecting HTTP proxy in front of the real registry: it forwards requests and
//! can add latency, reset connections, answer 500 or 429, or truncate, inflate or garble
//! bodies. The mode can change while tests run.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Wait this long before forwarding.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer with this status and no body.
    Status(u16),
    /// Answer 429 with `Retry-After: secs` the first `times` requests, then forward.
    TooManyRequests { retry_after_secs: u64, times: usize },
    /// Forward, but send only half the body (the header keeps the full length).
    Truncate,
    /// Forward, but claim and send a body of this many bytes.
    Inflate(usize),
    /// Forward, but replace the body with bytes that are not what was asked for.
    Garble,
    /// A lying registry: for requests whose path ends with one of `paths`, forward, but send
    /// `body` instead of upstream's body under upstream's headers (`Content-Type` included);
    /// `Docker-Content-Digest` becomes `digest` when given, else stays upstream's.
    Lie {
        paths: Vec<String>,
        body: Vec<u8>,
        digest: Option<String>,
    },
}

pub struct FaultProxy {
    pub host: String,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let upstream = upstream.to_string();
        let shared = fault.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let fault = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, fault).await;
                });
            }
        });
        Self { host, fault, task }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
    Ok(head)
}

/// The fault for this request; a 429 budget counts down to `Pass`.
fn next_fault(fault: &Mutex<Fault>) -> Fault {
    let mut f = fault.lock().unwrap();
    if let Fault::TooManyRequests { times, .. } = &mut *f {
        if *times == 0 {
            *f = Fault::Pass;
        } else {
            *times -= 1;
        }
    }
    f.clone()
}

/// One request per connection: the answer carries `Connection: close`.
async fn serve(
    mut client: TcpStream,
    upstream: &str,
    fault: Arc<Mutex<Fault>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let current = next_fault(&fault);
    match current {
        Fault::Reset => Ok(()),
        Fault::Status(status) => {
            let answer = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(answer.as_bytes()).await
        }
        Fault::TooManyRequests {
            retry_after_secs, ..
        } => {
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            client.write_all(answer.as_bytes()).await
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            forward(client, upstream, &head, &Fault::Pass).await
        }
        Fault::Lie { paths, .. }
            if !String::from_utf8_lossy(&head)
                .split(' ')
                .nth(1)
                .is_some_and(|path| paths.iter().any(|p| path.ends_with(p.as_str()))) =>
        {
            forward(client, upstream, &head, &Fault::Pass).await
        }
        other => forward(client, upstream, &head, &other).await,
    }
}

async fn forward(
    mut client: TcpStream,
    upstream: &str,
    head: &[u8],
    fault: &Fault,
) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(head);
    // Ask upstream to close after answering, so the response ends at EOF.
    let mut request = String::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    let (resp_head, body) = response.split_at(split);
    let resp_head = String::from_utf8_lossy(resp_head).to_string();
    let with_length = |head: &str, len: usize| {
        let mut out = String::new();
        for line in head.split("\r\n").filter(|l| !l.is_empty()) {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("content-length:")
                || lower.starts_with("connection:")
                || lower.starts_with("transfer-encoding:")
            {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(&format!(
            "Content-Length: {len}\r\nConnection: close\r\n\r\n"
        ));
        out
    };
    match fault {
        Fault::Truncate => {
            client
                .write_all(with_length(&resp_head, body.len()).as_bytes())
                .await?;
            client.write_all(&body[..body.len() / 2]).await
        }
        Fault::Inflate(size) => {
            client
                .write_all(with_length(&resp_head, *size).as_bytes())
                .await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < *size {
                let n = chunk.len().min(size - sent);
                if client.write_all(&chunk[..n]).await.is_err() {
                    return Ok(());
                }
                sent += n;
            }
            Ok(())
        }
        Fault::Lie {
            body: lie, digest, ..
        } => {
            // Served as found, whatever upstream had under that path.
            let head = match digest {
                Some(digest) => resp_head
                    .split("\r\n")
                    .enumerate()
                    .map(|(i, line)| {
                        let lower = line.to_ascii_lowercase();
                        if i == 0 {
                            "HTTP/1.1 200 OK".to_string()
                        } else if lower.starts_with("docker-content-digest:") {
                            format!("Docker-Content-Digest: {digest}")
                        } else {
                            line.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\r\n"),
                None => resp_head.clone(),
            };
            client
                .write_all(with_length(&head, lie.len()).as_bytes())
                .await?;
            client.write_all(lie).await
        }
        Fault::Garble => {
            let garbage = b"{\"this is\": not a manifest";
            client
                .write_all(with_length(&resp_head, garbage.len()).as_bytes())
                .await?;
            client.write_all(garbage).await
        }
        _ => {
            client.write_all(resp_head.as_bytes()).await?;
            client.write_all(body).await
        }
    }
}
