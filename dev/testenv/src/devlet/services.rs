//! kube-proxy's part, in userspace: every ClusterIP Service (not headless, any namespace) gets a
//! loopback address of its own, kept as long as the Service exists, where the devlet listens on
//! the Service's ports and forwards each new TCP connection to a ready endpoint of it.
//! Endpoints are what the EndpointSlice controller would write — the ready Pods the selector
//! matches, at the target port resolved per Pod (a named one through the Pod's container ports)
//! — computed here from the Pods, because the apiserver refuses EndpointSlices with loopback
//! addresses (Pod IPs here); a Service without a selector uses its EndpointSlices as they are.
//! `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local` name that address in the devlet's
//! hosts file, and in the Envoy bootstraps the devlet runs (Envoy's resolver reads no hosts
//! file). LoadBalancer and NodePort Services are left to [`super::loadbalancer`]: their ports
//! are the ones Envoy listens on, on all addresses.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::net::loopback_ips;

/// DNS name (`<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`) → the Service's proxy address.
pub type ServiceAddresses = Arc<BTreeMap<String, Ipv4Addr>>;

/// The current [`ServiceAddresses`], updated as Services come and go.
pub type Addresses = watch::Receiver<ServiceAddresses>;

/// The ready endpoints of one Service port.
type Targets = Arc<RwLock<Vec<SocketAddr>>>;

/// One proxied Service.
struct Proxy {
    ip: Ipv4Addr,
    /// Service port → (its listener, where it forwards to).
    ports: BTreeMap<u16, (tokio::task::JoinHandle<()>, Targets)>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for (task, _) in self.ports.values() {
            task.abort();
        }
    }
}

/// The proxy's addresses, and the proxy itself (runs until its watches fail).
pub fn proxy(
    client: kube::Client,
) -> (
    Addresses,
    impl std::future::Future<Output = anyhow::Result<()>>,
) {
    let (tx, rx) = watch::channel(ServiceAddresses::default());
    (rx, run(client, tx))
}

async fn run(client: kube::Client, tx: watch::Sender<ServiceAddresses>) -> anyhow::Result<()> {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let services_events = reflector::reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let slices_events = reflector::reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let pods_events = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map(|_| ())
    .boxed();
    let mut events = futures::stream::select_all([services_events, slices_events, pods_events]);
    let mut proxies: BTreeMap<(String, String), Proxy> = BTreeMap::new();
    while events.next().await.is_some() {
        sync(&services, &slices, &pods, &mut proxies);
        let addresses: BTreeMap<String, Ipv4Addr> = proxies
            .iter()
            .flat_map(|((ns, name), p)| {
                [
                    (format!("{name}.{ns}.svc"), p.ip),
                    (format!("{name}.{ns}.svc.cluster.local"), p.ip),
                ]
            })
            .collect();
        if **tx.borrow() != addresses {
            tx.send_replace(Arc::new(addresses));
        }
    }
    Ok(())
}

/// Whether the devlet proxies a Service: ClusterIP, not headless.
fn proxied(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    let cluster_ip = matches!(spec.type_.as_deref(), None | Some("ClusterIP"));
    cluster_ip
        && spec.cluster_ip.as_deref() != Some("None")
        && svc.metadata.deletion_timestamp.is_none()
}

/// Brings the proxies in line with the Services and their endpoints.
fn sync(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
    proxies: &mut BTreeMap<(String, String), Proxy>,
) {
    let wanted: BTreeMap<(String, String), Arc<Service>> = services
        .state()
        .into_iter()
        .filter(|s| proxied(s))
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    proxies.retain(|key, _| wanted.contains_key(key));
    let slices = slices.state();
    let pods = pods.state();
    for (key, svc) in &wanted {
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .collect::<Vec<_>>();
        if !proxies.contains_key(key) {
            let numbers: Vec<u16> = ports
                .iter()
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect();
            let Ok(ips) = loopback_ips(1, &numbers) else {
                tracing::warn!(service = %key.1, namespace = %key.0, "no loopback address for the service proxy");
                continue;
            };
            tracing::info!(service = %key.1, namespace = %key.0, ip = %ips[0], "service proxy address");
            proxies.insert(
                key.clone(),
                Proxy {
                    ip: ips[0],
                    ports: BTreeMap::new(),
                },
            );
        }
        let Some(proxy) = proxies.get_mut(key) else {
            continue;
        };
        let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let selected: Vec<&Arc<Pod>> = match &selector {
            Some(sel) if !sel.is_empty() => pods
                .iter()
                .filter(|p| {
                    p.namespace().as_deref() == Some(key.0.as_str())
                        && sel.iter().all(|(k, v)| p.labels().get(k) == Some(v))
                        && p.metadata.deletion_timestamp.is_none()
                        && (publish_not_ready || pod_ready(p))
                })
                .collect(),
            _ => Vec::new(),
        };
        let own: Vec<&Arc<EndpointSlice>> = slices
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(key.0.as_str())
                    && s.labels().get("kubernetes.io/service-name") == Some(&key.1)
            })
            .collect();
        let mut seen = BTreeSet::new();
        for port in &ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            seen.insert(number);
            let targets = if selector.as_ref().is_some_and(|s| !s.is_empty()) {
                pod_endpoints(&selected, port)
            } else {
                ready_endpoints(&own, port.name.as_deref())
            };
            if let Some((_, current)) = proxy.ports.get(&number) {
                let mut t = current.write().unwrap_or_else(|e| e.into_inner());
                if *t != targets {
                    tracing::info!(service = %key.1, namespace = %key.0, port = number, ?targets, "service endpoints");
                    *t = targets;
                }
                continue;
            }
            let addr = SocketAddr::from((proxy.ip, number));
            let listener = match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            }) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(service = %key.1, namespace = %key.0, %addr, error = %e, "cannot listen for the service");
                    continue;
                }
            };
            tracing::info!(service = %key.1, namespace = %key.0, %addr, ?targets, "service proxy listening");
            let targets: Targets = Arc::new(RwLock::new(targets));
            let task = tokio::spawn(forward(listener, targets.clone()));
            proxy.ports.insert(number, (task, targets));
        }
        proxy.ports.retain(|number, (task, _)| {
            let keep = seen.contains(number);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The endpoints of a Service port on the selected Pods: each Pod's IP at the target port (a
/// number, or the name of one of the Pod's container ports; none: the Service port).
fn pod_endpoints(pods: &[&Arc<Pod>], port: &ServicePort) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for p in pods {
        let Some(ip) = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let number = match &port.target_port {
            None => u16::try_from(port.port).ok(),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(name)) => p
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok()),
        };
        if let Some(number) = number {
            out.push(SocketAddr::from((ip, number)));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The ready endpoints of the Service port named `port_name` (unnamed: the only one).
fn ready_endpoints(slices: &[&Arc<EndpointSlice>], port_name: Option<&str>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice
            .ports
            .as_ref()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == port_name.unwrap_or(""))
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &e.addresses {
                if let Ok(ip) = a.parse::<Ipv4Addr>() {
                    out.push(SocketAddr::from((ip, port)));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Accepts connections and splices each to a ready endpoint (round robin); without one the
/// connection is closed at once, as a refused one would be.
async fn forward(listener: TcpListener, targets: Targets) {
    let next = AtomicUsize::new(0);
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: do not spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let target = {
            let t = targets.read().unwrap_or_else(|e| e.into_inner());
            (!t.is_empty()).then(|| t[next.fetch_add(1, Ordering::Relaxed) % t.len()])
        };
        let Some(target) = target else {
            tracing::debug!(%peer, "no ready endpoint: connection closed");
            continue;
        };
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!(%peer, %target, error = %e, "cannot reach the endpoint"),
            }
        });
    }
}

/// Replaces every Service name of `addresses` standing alone in `text` (not part of a longer
/// name) with its proxy address: an Envoy bootstrap that names a Service.
pub fn rewrite_service_names(text: &str, addresses: &BTreeMap<String, Ipv4Addr>) -> String {
    let mut names: Vec<(&String, &Ipv4Addr)> = addresses.iter().collect();
    // Longest first: `x.ns.svc.cluster.local` before `x.ns.svc`.
    names.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    // Only where Envoy resolves a name (`address:` fields): the TLS server name and the
    // certificate names it checks stay names, as they do with cluster DNS.
    text.split_inclusive('\n')
        .map(|line| {
            if !is_address_line(line) {
                return line.to_string();
            }
            let mut out = line.to_string();
            for (name, ip) in &names {
                out = replace_word(&out, name, &ip.to_string());
            }
            out
        })
        .collect()
}

fn is_address_line(line: &str) -> bool {
    line.contains("address:")
}

fn replace_word(text: &str, word: &str, with: &str) -> String {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(word) {
        let before = if i > 0 {
            rest[..i].chars().last()
        } else {
            out.chars().last()
        };
        let after = rest[i + word.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(part_of_name) || after.is_some_and(part_of_name) {
            out.push_str(word);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The Service names (`*.svc`, `*.svc.cluster.local`) a text names as `address: <name>` that
/// have no proxy address (yet).
pub fn unknown_service_names(text: &str, addresses: &BTreeMap<String, Ipv4Addr>) -> Vec<String> {
    text.lines()
        .filter(|l| is_address_line(l))
        .flat_map(|l| {
            l.split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}' | '"' | '\'' | ':'))
        })
        .filter(|w| w.ends_with(".svc") || w.ends_with(".svc.cluster.local"))
        .filter(|w| !addresses.contains_key(*w))
        .map(String::from)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_in_a_bootstrap_become_proxy_addresses() {
        let ip = Ipv4Addr::new(127, 8, 9, 1);
        let addresses = BTreeMap::from([
            ("pier-xds.pier-system.svc".to_string(), ip),
            ("pier-xds.pier-system.svc.cluster.local".to_string(), ip),
        ]);
        let text = "endpoint: {address: {socket_address: {address: pier-xds.pier-system.svc, port_value: 18000}}}\n\
                    address: pier-xds.pier-system.svc.cluster.local\naddress: xpier-xds.pier-system.svc\naddress: other.ns.svc\n\
                    sni: pier-xds.pier-system.svc\n";
        let out = rewrite_service_names(text, &addresses);
        assert!(
            out.contains("{address: 127.8.9.1, port_value: 18000}"),
            "{out}"
        );
        assert!(out.contains("address: 127.8.9.1\n"), "{out}");
        assert!(
            out.contains("address: xpier-xds.pier-system.svc\n"),
            "{out}"
        );
        // The TLS server name stays a name (Envoy checks the certificate against it).
        assert!(out.contains("sni: pier-xds.pier-system.svc\n"), "{out}");
        assert_eq!(
            unknown_service_names(&out, &addresses),
            ["other.ns.svc", "xpier-xds.pier-system.svc"]
        );
    }
}
