//! Static checks of the Kubernetes manifests in `deploy/k8s`: they parse, kustomize lists exactly
//! them, the objects fit together (names, labels, ports, probes, mounts), and, most of all, each
//! pod's start script run under `sh` yields a config that shoal's own loader accepts, with the
//! node id its certificate names and the addresses the other pods dial.
//!
//! Nothing here needs a Kubernetes cluster or kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Deserialize;
use serde_norway::Value;
use shoal::config::{Config, LogFormat, ShutdownSection, TlsSection};
use shoal::transport::tls::Identity;

/// The folder of the manifests.
fn k8s_dir() -> PathBuf {
    crate::repo().join("deploy/k8s")
}

/// One YAML document of a manifest file.
struct Doc {
    /// File name inside `deploy/k8s`.
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("?")
    }

    fn name(&self) -> &str {
        self.value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("?")
    }

    /// "file: Kind/name: `a.b.c`" (or "file: `a.b.c`" for an unnamed document), for messages.
    fn field(&self, path: &str) -> String {
        match self.value.get("metadata").and_then(|m| m.get("name")) {
            Some(_) => format!("{}: {}/{}: `{path}`", self.file, self.kind(), self.name()),
            None => format!("{}: `{path}`", self.file),
        }
    }

    /// The value at a dotted path (keys may not contain dots; use [`Doc::at_keys`] for those).
    fn at(&self, path: &str) -> Result<&Value> {
        let keys: Vec<&str> = path.split('.').collect();
        self.at_keys(&keys).with_context(|| format!("{} is missing", self.field(path)))
    }

    fn at_keys(&self, keys: &[&str]) -> Result<&Value> {
        lookup(&self.value, keys).ok_or_else(|| anyhow!("{} is missing", self.field(&keys.join("."))))
    }

    fn str_at(&self, path: &str) -> Result<&str> {
        self.at(path)?.as_str().ok_or_else(|| anyhow!("{} is not a string", self.field(path)))
    }

    fn u64_at(&self, path: &str) -> Result<u64> {
        self.at(path)?.as_u64().ok_or_else(|| anyhow!("{} is not a non-negative integer", self.field(path)))
    }

    fn seq_at(&self, path: &str) -> Result<&Vec<Value>> {
        self.at(path)?.as_sequence().ok_or_else(|| anyhow!("{} is not a list", self.field(path)))
    }

    /// A map of strings (labels, selectors, annotations).
    fn labels_at(&self, path: &str) -> Result<BTreeMap<String, String>> {
        string_map(self.at(path)?).with_context(|| format!("{} is not a map of strings", self.field(path)))
    }
}

fn lookup<'a>(mut v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    for k in keys {
        v = v.get(*k)?;
    }
    Some(v)
}

fn string_map(v: &Value) -> Option<BTreeMap<String, String>> {
    v.as_mapping()?.iter().map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect()
}

/// A field of a list entry found by its `name` (containers, ports, volumes, mounts).
fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|v| v.get("name").and_then(Value::as_str) == Some(name))
}

/// Every manifest of `deploy/k8s`, parsed.
struct Manifests {
    /// `kustomization.yaml`.
    kustomization: Doc,
    /// Every document of every other `*.yaml` file.
    docs: Vec<Doc>,
    /// The `*.yaml` files besides `kustomization.yaml`.
    files: BTreeSet<String>,
}

impl Manifests {
    fn load() -> Result<Self> {
        let dir = k8s_dir();
        let mut docs = Vec::new();
        let mut files = BTreeSet::new();
        let mut kustomization = None;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if !(file.ends_with(".yaml") || file.ends_with(".yml")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {file}"))?;
            let mut count = 0;
            for (i, de) in serde_norway::Deserializer::from_str(&text).enumerate() {
                let value =
                    Value::deserialize(de).with_context(|| format!("{file}: document {} is not YAML", i + 1))?;
                if value.is_null() {
                    continue; // an empty document, e.g. after a trailing `---`
                }
                count += 1;
                let doc = Doc { file: file.clone(), value };
                let required: &[&str] = if file == "kustomization.yaml" {
                    &["apiVersion", "kind"]
                } else {
                    &["apiVersion", "kind", "metadata.name"]
                };
                for field in required {
                    ensure!(doc.str_at(field).is_ok_and(|s| !s.is_empty()), "{} must be set", doc.field(field));
                }
                if file == "kustomization.yaml" {
                    ensure!(doc.kind() == "Kustomization", "{} must be Kustomization", doc.field("kind"));
                    kustomization = Some(doc);
                } else {
                    docs.push(doc);
                }
            }
            ensure!(count > 0, "{file} holds no document");
            if file != "kustomization.yaml" {
                files.insert(file);
            }
        }
        let kustomization = kustomization.ok_or_else(|| anyhow!("deploy/k8s has no kustomization.yaml"))?;
        Ok(Self { kustomization, docs, files })
    }

    /// The one object of this kind and name.
    fn get(&self, kind: &str, name: &str) -> Result<&Doc> {
        let found: Vec<&Doc> = self.docs.iter().filter(|d| d.kind() == kind && d.name() == name).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => bail!("deploy/k8s has no {kind} named {name}"),
            _ => bail!("deploy/k8s has {} {kind}s named {name}", found.len()),
        }
    }

    /// The one object of this kind.
    fn only(&self, kind: &str) -> Result<&Doc> {
        let found: Vec<&Doc> = self.docs.iter().filter(|d| d.kind() == kind).collect();
        match found.as_slice() {
            [one] => Ok(one),
            _ => bail!("deploy/k8s should have one {kind}, has {}", found.len()),
        }
    }

    fn statefulset(&self) -> Result<&Doc> {
        self.only("StatefulSet")
    }

    /// The secretGenerator entry called `name`: its key names (file names inside the Secret).
    fn generated_secret(&self, name: &str) -> Result<BTreeSet<String>> {
        let k = &self.kustomization;
        let generators = k.seq_at("secretGenerator")?;
        let generator = named(generators, name)
            .ok_or_else(|| anyhow!("{} has no entry named {name}", k.field("secretGenerator")))?;
        let files = generator
            .get("files")
            .and_then(Value::as_sequence)
            .ok_or_else(|| anyhow!("{} lists no files", k.field(&format!("secretGenerator[{name}].files"))))?;
        let mut keys = BTreeSet::new();
        for f in files {
            let f = f.as_str().ok_or_else(|| anyhow!("{} holds a non-string", k.field("secretGenerator.files")))?;
            // `key=path` or just `path` (the key is then the file name).
            let key = match f.split_once('=') {
                Some((key, _)) => key.to_string(),
                None => Path::new(f).file_name().and_then(|n| n.to_str()).unwrap_or(f).to_string(),
            };
            keys.insert(key);
        }
        Ok(keys)
    }
}

/// The pod template's one container, and the pieces of the StatefulSet the checks need.
struct Pod<'a> {
    sts: &'a Doc,
    container: &'a Value,
    labels: BTreeMap<String, String>,
}

impl<'a> Pod<'a> {
    fn of(sts: &'a Doc) -> Result<Self> {
        let containers = sts.seq_at("spec.template.spec.containers")?;
        ensure!(containers.len() == 1, "{} should hold one container", sts.field("spec.template.spec.containers"));
        let labels = sts.labels_at("spec.template.metadata.labels")?;
        Ok(Self { sts, container: &containers[0], labels })
    }

    fn field(&self, path: &str) -> String {
        self.sts.field(&format!("spec.template.spec.containers[0].{path}"))
    }

    fn container_at(&self, path: &str) -> Option<&'a Value> {
        let keys: Vec<&str> = path.split('.').collect();
        lookup(self.container, &keys)
    }

    /// (containerPort, protocol) of the container port called `name`.
    fn port(&self, name: &str) -> Result<(u16, String)> {
        let ports = self.container_at("ports").and_then(Value::as_sequence);
        let port = ports
            .and_then(|p| named(p, name))
            .ok_or_else(|| anyhow!("{} has no port named {name}", self.field("ports")))?;
        let number =
            port.get("containerPort").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).ok_or_else(|| {
                anyhow!("{} is not a port number", self.field(&format!("ports[{name}].containerPort")))
            })?;
        let protocol = port.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
        Ok((number, protocol))
    }

    /// A probe's (path, port number), a named port resolved against the container's ports.
    fn http_probe(&self, probe: &str) -> Result<(String, u16)> {
        let get = self
            .container_at(&format!("{probe}.httpGet"))
            .ok_or_else(|| anyhow!("{} is missing", self.field(&format!("{probe}.httpGet"))))?;
        let path = get
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{} is missing", self.field(&format!("{probe}.httpGet.path"))))?;
        let port =
            get.get("port").ok_or_else(|| anyhow!("{} is missing", self.field(&format!("{probe}.httpGet.port"))))?;
        let number = match (port.as_u64(), port.as_str()) {
            (Some(n), _) => u16::try_from(n)?,
            (None, Some(name)) => self.port(name)?.0,
            _ => bail!("{} is neither a number nor a port name", self.field(&format!("{probe}.httpGet.port"))),
        };
        Ok((path.to_string(), number))
    }

    /// The container's mount at `mount_path`, and the pod volume it mounts (none for a claim
    /// of the StatefulSet's volumeClaimTemplates).
    fn mount(&self, mount_path: &str) -> Result<(&'a Value, Option<&'a Value>)> {
        let mounts = self.container_at("volumeMounts").and_then(Value::as_sequence);
        let mount = mounts
            .and_then(|m| m.iter().find(|m| m.get("mountPath").and_then(Value::as_str) == Some(mount_path)))
            .ok_or_else(|| anyhow!("{} mounts nothing at {mount_path}", self.field("volumeMounts")))?;
        let name = mount.get("name").and_then(Value::as_str).unwrap_or_default();
        let volume = self.sts.seq_at("spec.template.spec.volumes").ok().and_then(|v| named(v, name));
        Ok((mount, volume))
    }

    /// The pod volume mounted at `mount_path`, and the mount.
    fn volume(&self, mount_path: &str) -> Result<(&'a Value, &'a Value)> {
        let (mount, volume) = self.mount(mount_path)?;
        let volume = volume.ok_or_else(|| {
            anyhow!("{} has no volume for the mount at {mount_path}", self.sts.field("spec.template.spec.volumes"))
        })?;
        Ok((volume, mount))
    }
}

fn default_http_port() -> u16 {
    shoal::config::HttpSection::default().listen.port()
}

fn default_peer_port() -> u16 {
    shoal::config::PeerSection::default().listen.port()
}

#[test]
fn every_manifest_parses_and_kustomization_lists_exactly_them() -> Result<()> {
    let m = Manifests::load()?;
    let k = &m.kustomization;
    let mut listed = BTreeSet::new();
    for r in k.seq_at("resources")? {
        let r = r.as_str().ok_or_else(|| anyhow!("{} holds a non-string", k.field("resources")))?;
        ensure!(listed.insert(r.to_string()), "{} lists {r} twice", k.field("resources"));
    }
    let missing: Vec<_> = m.files.difference(&listed).collect();
    ensure!(missing.is_empty(), "{} does not list {missing:?}", k.field("resources"));
    let extra: Vec<_> = listed.difference(&m.files).collect();
    ensure!(extra.is_empty(), "{} lists {extra:?}, which are not files of deploy/k8s", k.field("resources"));

    m.get("StatefulSet", "shoal")?;
    m.get("Service", "shoal")?;
    m.get("Service", "shoal-peers")?;
    m.get("ConfigMap", "shoal-config")?;
    m.get("PodDisruptionBudget", "shoal")?;
    m.generated_secret("shoal-certs")?;
    Ok(())
}

#[test]
fn the_statefulset_starts_three_pods_at_once_behind_the_headless_service() -> Result<()> {
    let m = Manifests::load()?;
    let sts = m.statefulset()?;
    ensure!(sts.u64_at("spec.replicas")? == 3, "{} should be 3", sts.field("spec.replicas"));
    ensure!(
        sts.str_at("spec.podManagementPolicy")? == "Parallel",
        "{} must be Parallel: a node is ready only once a quorum of pods runs, so OrderedReady deadlocks",
        sts.field("spec.podManagementPolicy")
    );
    let service_name = sts.str_at("spec.serviceName")?;
    let headless = m.get("Service", service_name).with_context(|| sts.field("spec.serviceName"))?;
    ensure!(
        headless.str_at("spec.clusterIP")? == "None",
        "{} must be None (headless)",
        headless.field("spec.clusterIP")
    );
    ensure!(
        headless.at("spec.publishNotReadyAddresses")?.as_bool() == Some(true),
        "{} must be true: peers must resolve each other before they are ready",
        headless.field("spec.publishNotReadyAddresses")
    );

    let selector = sts.labels_at("spec.selector.matchLabels")?;
    let pod = Pod::of(sts)?;
    ensure!(
        selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)),
        "{} {selector:?} does not match the pod labels {:?}",
        sts.field("spec.selector.matchLabels"),
        pod.labels
    );

    let claims = sts.seq_at("spec.volumeClaimTemplates")?;
    let data = claims
        .iter()
        .find(|c| lookup(c, &["metadata", "name"]).and_then(Value::as_str) == Some("data"))
        .ok_or_else(|| anyhow!("{} has no claim named data", sts.field("spec.volumeClaimTemplates")))?;
    let modes = lookup(data, &["spec", "accessModes"]).and_then(Value::as_sequence);
    ensure!(
        modes.is_some_and(|m| m.iter().any(|m| m.as_str() == Some("ReadWriteOnce"))),
        "{} should be ReadWriteOnce",
        sts.field("spec.volumeClaimTemplates[data].spec.accessModes")
    );
    ensure!(
        lookup(data, &["spec", "resources", "requests", "storage"]).and_then(Value::as_str).is_some(),
        "{} must be set",
        sts.field("spec.volumeClaimTemplates[data].spec.resources.requests.storage")
    );

    let grace = sts.u64_at("spec.template.spec.terminationGracePeriodSeconds")?;
    let drain = ShutdownSection::default().drain_timeout;
    ensure!(
        grace > drain.as_secs(),
        "{} is {grace}, not longer than the node's default shutdown.drain_timeout ({drain:?})",
        sts.field("spec.template.spec.terminationGracePeriodSeconds")
    );
    Ok(())
}

#[test]
fn pods_run_unprivileged_with_a_read_only_root() -> Result<()> {
    let m = Manifests::load()?;
    let sts = m.statefulset()?;
    let pod_sc = "spec.template.spec.securityContext";
    ensure!(
        sts.at(&format!("{pod_sc}.runAsNonRoot"))?.as_bool() == Some(true),
        "{} must be true",
        sts.field(&format!("{pod_sc}.runAsNonRoot"))
    );
    for id in ["runAsUser", "runAsGroup", "fsGroup"] {
        let field = format!("{pod_sc}.{id}");
        ensure!(sts.u64_at(&field)? == 10001, "{} must be 10001, the image's user", sts.field(&field));
    }
    let seccomp = format!("{pod_sc}.seccompProfile.type");
    ensure!(sts.str_at(&seccomp)? == "RuntimeDefault", "{} must be RuntimeDefault", sts.field(&seccomp));

    let pod = Pod::of(sts)?;
    let sc = |path: &str| pod.container_at(&format!("securityContext.{path}"));
    ensure!(
        sc("allowPrivilegeEscalation").and_then(Value::as_bool) == Some(false),
        "{} must be false",
        pod.field("securityContext.allowPrivilegeEscalation")
    );
    ensure!(
        sc("readOnlyRootFilesystem").and_then(Value::as_bool) == Some(true),
        "{} must be true",
        pod.field("securityContext.readOnlyRootFilesystem")
    );
    let drop = sc("capabilities.drop").and_then(Value::as_sequence);
    ensure!(
        drop.is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL"))),
        "{} must drop ALL",
        pod.field("securityContext.capabilities.drop")
    );
    for r in ["requests.cpu", "requests.memory", "limits.memory"] {
        ensure!(
            pod.container_at(&format!("resources.{r}")).is_some(),
            "{} must be set",
            pod.field(&format!("resources.{r}"))
        );
    }
    Ok(())
}

#[test]
fn ports_probes_and_scrape_annotations_match_the_node() -> Result<()> {
    let m = Manifests::load()?;
    let sts = m.statefulset()?;
    let pod = Pod::of(sts)?;
    let (http, http_proto) = pod.port("http")?;
    let (peer, peer_proto) = pod.port("peer")?;
    ensure!(
        http == default_http_port() && http_proto == "TCP",
        "{} is {http}/{http_proto}, the node's default http.listen port is {}/TCP",
        pod.field("ports[http]"),
        default_http_port()
    );
    ensure!(
        peer == default_peer_port() && peer_proto == "UDP",
        "{} is {peer}/{peer_proto}, the node's default peer.listen port is {}/UDP (QUIC)",
        pod.field("ports[peer]"),
        default_peer_port()
    );

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let (p, port) = pod.http_probe(probe)?;
        ensure!(p == path && port == http, "{} is GET {p} on {port}, expected GET {path} on {http}", pod.field(probe));
    }
    if pod.container_at("startupProbe").is_some() {
        let (p, port) = pod.http_probe("startupProbe")?;
        ensure!(
            (p == "/healthz" || p == "/readyz") && port == http,
            "{} is GET {p} on {port}, expected /healthz on {http}",
            pod.field("startupProbe")
        );
    }

    let notes = sts.labels_at("spec.template.metadata.annotations")?;
    let note = |k: &str| notes.get(k).map(String::as_str);
    let field = |k: &str| sts.field(&format!("spec.template.metadata.annotations[{k}]"));
    ensure!(note("prometheus.io/scrape") == Some("true"), "{} must be \"true\"", field("prometheus.io/scrape"));
    ensure!(
        note("prometheus.io/port") == Some(http.to_string().as_str()),
        "{} must be \"{http}\"",
        field("prometheus.io/port")
    );
    ensure!(note("prometheus.io/path") == Some("/metrics"), "{} must be /metrics", field("prometheus.io/path"));

    for service in ["shoal", "shoal-peers"] {
        let svc = m.get("Service", service)?;
        for p in svc.seq_at("spec.ports")? {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
            let target = p
                .get("targetPort")
                .or_else(|| p.get("port"))
                .ok_or_else(|| anyhow!("{} has no port", svc.field("spec.ports")))?;
            let (number, proto) = match (target.as_u64(), target.as_str()) {
                (Some(n), _) => (u16::try_from(n)?, if n == u64::from(peer) { "UDP" } else { "TCP" }.to_string()),
                (None, Some(named)) => {
                    pod.port(named).with_context(|| svc.field(&format!("spec.ports[{name}].targetPort")))?
                }
                _ => bail!(
                    "{} is neither a number nor a port name",
                    svc.field(&format!("spec.ports[{name}].targetPort"))
                ),
            };
            ensure!(
                number == http || number == peer,
                "{} targets {number}, not a port of the node",
                svc.field(&format!("spec.ports[{name}]"))
            );
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            ensure!(
                protocol == proto,
                "{} is {protocol}, the container port is {proto}",
                svc.field(&format!("spec.ports[{name}].protocol"))
            );
        }
    }
    let headless = m.get("Service", "shoal-peers")?;
    let ports = headless.seq_at("spec.ports")?;
    ensure!(
        named(ports, "http").is_some() && named(ports, "peer").is_some(),
        "{} should name http and peer",
        headless.field("spec.ports")
    );
    Ok(())
}

#[test]
fn services_and_the_disruption_budget_select_the_pods() -> Result<()> {
    let m = Manifests::load()?;
    let pod = Pod::of(m.statefulset()?)?;
    let selects_pods = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    };
    for service in ["shoal", "shoal-peers"] {
        let svc = m.get("Service", service)?;
        let selector = svc.labels_at("spec.selector")?;
        ensure!(
            selects_pods(&selector),
            "{} {selector:?} does not select the pod labels {:?}",
            svc.field("spec.selector"),
            pod.labels
        );
    }
    let client = m.get("Service", "shoal")?;
    let kind = client.at("spec.type").ok().and_then(Value::as_str).unwrap_or("ClusterIP");
    ensure!(kind == "ClusterIP", "{} is {kind}, expected ClusterIP", client.field("spec.type"));
    ensure!(
        client.at("spec.clusterIP").ok().and_then(Value::as_str) != Some("None"),
        "{} must not be headless: clients get ready pods behind one address",
        client.field("spec.clusterIP")
    );

    let pdb = m.get("PodDisruptionBudget", "shoal")?;
    let max = pdb.at("spec.maxUnavailable")?;
    ensure!(
        max.as_u64() == Some(1),
        "{} must be 1 (a majority of every Raft group stays)",
        pdb.field("spec.maxUnavailable")
    );
    let selector = pdb.labels_at("spec.selector.matchLabels")?;
    ensure!(
        selects_pods(&selector),
        "{} {selector:?} does not select the pod labels {:?}",
        pdb.field("spec.selector.matchLabels"),
        pod.labels
    );
    Ok(())
}

/// The mounts the node needs: its claim at data_dir, the ConfigMap's file, the Secret's folder.
struct Mounts {
    /// Path of the config file in the container.
    config_file: String,
    /// Name of the ConfigMap and the key holding the config.
    config_map: (String, String),
    /// Folder of the certificates in the container.
    certs_dir: String,
    /// Name of the Secret mounted there.
    secret: String,
}

fn mounts(m: &Manifests, pod: &Pod<'_>) -> Result<Mounts> {
    let sts = pod.sts;
    let (data, volume) = pod.mount("/data")?;
    let data_name = data.get("name").and_then(Value::as_str).unwrap_or_default();
    let claims = sts.seq_at("spec.volumeClaimTemplates")?;
    ensure!(
        volume.is_none()
            && claims.iter().any(|c| lookup(c, &["metadata", "name"]).and_then(Value::as_str) == Some(data_name)),
        "{}: /data must mount a volumeClaimTemplate (a claim per pod), not {data_name}",
        pod.field("volumeMounts")
    );

    let config_file = "/etc/shoal/shoal.toml";
    let (config, mount) = pod.volume(config_file)?;
    let config_map = lookup(config, &["configMap", "name"]).and_then(Value::as_str).ok_or_else(|| {
        anyhow!("{}: the volume mounted at {config_file} is not a ConfigMap", sts.field("spec.template.spec.volumes"))
    })?;
    let key = mount.get("subPath").and_then(Value::as_str).ok_or_else(|| {
        anyhow!("{} should mount one key with subPath", pod.field(&format!("volumeMounts[{config_file}]")))
    })?;
    m.get("ConfigMap", config_map)?;
    ensure!(
        mount.get("readOnly").and_then(Value::as_bool) == Some(true),
        "{} should be readOnly",
        pod.field(&format!("volumeMounts[{config_file}].readOnly"))
    );

    let certs_dir = "/etc/shoal/certs";
    let (certs, mount) = pod.volume(certs_dir)?;
    let secret = lookup(certs, &["secret", "secretName"]).and_then(Value::as_str).ok_or_else(|| {
        anyhow!("{}: the volume mounted at {certs_dir} is not a Secret", sts.field("spec.template.spec.volumes"))
    })?;
    ensure!(
        mount.get("readOnly").and_then(Value::as_bool) == Some(true),
        "{} should be readOnly",
        pod.field(&format!("volumeMounts[{certs_dir}].readOnly"))
    );
    if let Some(mode) = lookup(certs, &["secret", "defaultMode"]) {
        // YAML 1.1, as Kubernetes reads it: a leading 0 is octal.
        let mode = match (mode.as_u64(), mode.as_str()) {
            (Some(n), _) => n,
            (None, Some(s)) if s.starts_with('0') => u64::from_str_radix(s, 8)?,
            _ => bail!("{} is not a file mode", sts.field("spec.template.spec.volumes[certs].secret.defaultMode")),
        };
        ensure!(
            mode & !0o440 == 0,
            "{} is 0{mode:o}: private keys should be readable by owner and group (fsGroup) only, and never writable",
            sts.field("spec.template.spec.volumes[certs].secret.defaultMode")
        );
    }
    Ok(Mounts {
        config_file: config_file.to_string(),
        config_map: (config_map.to_string(), key.to_string()),
        certs_dir: certs_dir.to_string(),
        secret: secret.to_string(),
    })
}

#[test]
fn volumes_mount_the_data_claim_the_config_and_the_certificates() -> Result<()> {
    let m = Manifests::load()?;
    let pod = Pod::of(m.statefulset()?)?;
    let mounts = mounts(&m, &pod)?;
    let keys = m.generated_secret(&mounts.secret).with_context(|| {
        format!("{}: the certs volume's Secret {} is not generated by kustomization.yaml", pod.sts.file, mounts.secret)
    })?;
    ensure!(keys.contains("ca.pem"), "kustomization.yaml: `secretGenerator[{}]` lacks ca.pem", mounts.secret);
    ensure!(
        !keys.contains("ca.key"),
        "kustomization.yaml: `secretGenerator[{}]` must not ship ca.key: whoever holds it can mint node certificates",
        mounts.secret
    );
    Ok(())
}

/// Kubernetes' expansion of `command` and `args`: `$(VAR)` for a variable of the container's
/// `env`, `$$` for `$`; anything else, including `$((…))` and unknown variables, is left as is.
fn k8s_expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
            && let Some(value) = env.get(&tail[..end])
        {
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Runs the container's command and args as the kubelet would, with `HOSTNAME` set and a stub
/// `shoal` first on PATH that prints its arguments one per line. Returns (exit ok, the
/// arguments `shoal` got, stderr).
fn run_start_script(pod: &Pod<'_>, hostname: &str, stub_dir: &Path) -> Result<(bool, Vec<String>, String)> {
    let env: BTreeMap<String, String> = pod
        .container_at("env")
        .and_then(Value::as_sequence)
        .map(|vars| {
            vars.iter()
                .filter_map(|v| Some((v.get("name")?.as_str()?.to_string(), v.get("value")?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut argv = Vec::new();
    for key in ["command", "args"] {
        if let Some(list) = pod.container_at(key).and_then(Value::as_sequence) {
            for a in list {
                let a = a.as_str().ok_or_else(|| anyhow!("{} holds a non-string", pod.field(key)))?;
                argv.push(k8s_expand(a, &env));
            }
        }
    }
    ensure!(
        argv.first().is_some_and(|a| a == "/bin/sh"),
        "{} should run the start script with /bin/sh (the image's ENTRYPOINT is shoal itself)",
        pod.field("command")
    );
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(&env)
        .env("HOSTNAME", hostname)
        .env("PATH", format!("{}:/usr/bin:/bin", stub_dir.display()))
        .output()
        .context("running the start script under /bin/sh")?;
    let args = String::from_utf8(out.stdout)?.lines().map(str::to_string).collect();
    Ok((out.status.success(), args, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Maps a certificate path inside the container onto the same file in `local`.
fn local_cert(path: &Path, certs_dir: &str, local: &Path) -> Result<PathBuf> {
    let name = path
        .strip_prefix(certs_dir)
        .with_context(|| format!("{} is not under the certificate mount {certs_dir}", path.display()))?;
    Ok(local.join(name))
}

#[test]
fn each_pods_start_script_yields_a_valid_config_for_its_ordinal() -> Result<()> {
    let m = Manifests::load()?;
    let sts = m.statefulset()?;
    let pod = Pod::of(sts)?;
    let mounts = mounts(&m, &pod)?;
    let (cm_name, cm_key) = &mounts.config_map;
    let cm = m.get("ConfigMap", cm_name)?;
    let toml = cm
        .at_keys(&["data", cm_key])?
        .as_str()
        .ok_or_else(|| anyhow!("{} is not a string", cm.field(&format!("data.{cm_key}"))))?;
    let secret_keys = m.generated_secret(&mounts.secret)?;
    let replicas = sts.u64_at("spec.replicas")?;
    let service = sts.str_at("spec.serviceName")?;
    let (http_port, _) = pod.port("http")?;
    let (peer_port, _) = pod.port("peer")?;
    let grace = sts.u64_at("spec.template.spec.terminationGracePeriodSeconds")?;

    let tmp = tempfile::tempdir()?;
    let stub_dir = tmp.path().join("bin");
    std::fs::create_dir(&stub_dir)?;
    let stub = stub_dir.join("shoal");
    std::fs::write(&stub, "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n")?;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))?;
    let config_path = tmp.path().join("shoal.toml");
    std::fs::write(&config_path, toml)?;
    // Real certificates, one more than the replicas (a pod added by `kubectl scale`).
    let local_certs = tmp.path().join("certs");
    shoal::certs::init(&local_certs, replicas + 1)?;

    let mut founders = BTreeMap::new();
    // Ordinals 0..replicas are the founders; one more is a pod added later, which must join.
    for ordinal in 0..=replicas {
        let hostname = format!("{}-{ordinal}", sts.name());
        let context = || format!("{}: the start script of pod {hostname}", sts.file);
        let (ok, args, stderr) = run_start_script(&pod, &hostname, &stub_dir).with_context(context)?;
        ensure!(ok, "{}: exited with an error: {stderr}", context());
        ensure!(
            args.len() >= 3 && args[0] == "start" && args[1] == "--config" && args[2] == mounts.config_file,
            "{}: runs `shoal {}`, expected `shoal start --config {} …`",
            context(),
            args.join(" "),
            mounts.config_file
        );
        let mut overrides = Vec::new();
        for pair in args[3..].chunks(2) {
            match pair {
                [flag, kv] if flag == "--set" => overrides.push(kv.clone()),
                _ => bail!("{}: unexpected arguments {pair:?} after --config", context()),
            }
        }
        let config = Config::load_with_overrides(&config_path, &overrides)
            .map_err(|e| anyhow!("{}: {}:{cm_key} with {overrides:?} is refused: {e}", context(), cm.file))?;
        let id = ordinal + 1;
        ensure!(config.node.id == id, "{}: node.id is {}, expected ordinal + 1 = {id}", context(), config.node.id);

        let cfg = format!("{}: {cm_name}/{cm_key}", cm.file);
        ensure!(config.node.data_dir == Path::new("/data"), "{cfg}: `node.data_dir` must be /data, the claim's mount");
        for (field, addr, port) in
            [("http.listen", config.http.listen, http_port), ("peer.listen", config.peer.listen, peer_port)]
        {
            ensure!(
                addr.port() == port && addr.ip().is_unspecified(),
                "{cfg}: `{field}` is {addr}, expected {} (the container port, on every interface)",
                SocketAddr::from(([0, 0, 0, 0], port))
            );
        }
        ensure!(config.log.format == LogFormat::Json, "{cfg}: `log.format` should be json");
        ensure!(
            grace > config.shutdown.drain_timeout.as_secs(),
            "{}: `spec.template.spec.terminationGracePeriodSeconds` ({grace}) must exceed {cfg}: `shutdown.drain_timeout` ({:?})",
            sts.file,
            config.shutdown.drain_timeout
        );

        let dns = format!("{hostname}.{service}");
        let (http_adv, peer_adv) = (config.advertised_http_addr(), config.advertised_peer_addr());
        ensure!(
            http_adv == format!("{dns}:{http_port}"),
            "{}: advertises http {http_adv}, expected {dns}:{http_port}",
            context()
        );
        ensure!(
            peer_adv == format!("{dns}:{peer_port}"),
            "{}: advertises peer {peer_adv}, expected {dns}:{peer_port}",
            context()
        );

        // The files it reads come from the Secret and are what `shoal certs init` writes, with
        // the node's own id in its certificate.
        let TlsSection { ca_cert, cert, key } = &config.tls;
        let mut local = Vec::new();
        for p in [ca_cert, cert, key] {
            local.push(local_cert(p, &mounts.certs_dir, &local_certs).with_context(context)?);
        }
        let identity =
            Identity::load(&TlsSection { ca_cert: local[0].clone(), cert: local[1].clone(), key: local[2].clone() })
                .map_err(|e| anyhow!("{}: its tls files are not what `shoal certs init` writes: {e}", context()))?;
        ensure!(identity.node_id == id, "{}: tls.cert names node {}, expected {id}", context(), identity.node_id);

        let members = &config.cluster.initial_members;
        if ordinal < replicas {
            for p in [ca_cert, cert, key] {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                ensure!(
                    secret_keys.contains(name),
                    "kustomization.yaml: `secretGenerator[{}].files` lacks {name}, which pod {hostname} reads",
                    mounts.secret
                );
            }
            let me = members
                .iter()
                .find(|m| m.id == id)
                .ok_or_else(|| anyhow!("{cfg}: `cluster.initial_members` lacks node {id} (pod {hostname})"))?;
            ensure!(
                me.peer_addr == peer_adv && me.http_addr == http_adv,
                "{cfg}: `cluster.initial_members` lists node {id} at {}/{}, pod {hostname} advertises {peer_adv}/{http_adv}",
                me.peer_addr,
                me.http_addr
            );
            founders.insert(id, peer_adv);
        } else {
            ensure!(
                members.iter().all(|m| m.id != id),
                "{cfg}: `cluster.initial_members` lists node {id}, but the StatefulSet has {replicas} replicas"
            );
            let join: BTreeSet<&String> = config.cluster.join.iter().collect();
            let expected: BTreeSet<&String> = founders.values().collect();
            ensure!(
                join == expected,
                "{cfg}: `cluster.join` is {join:?}; a pod added by scaling joins through the founders {expected:?}"
            );
        }
        ensure!(
            members.len() as u64 == replicas,
            "{cfg}: `cluster.initial_members` has {} entries, the StatefulSet {replicas} replicas",
            members.len()
        );
    }

    // A HOSTNAME without an ordinal must not start a node with a made-up id.
    let (ok, args, _) = run_start_script(&pod, "shoal", &stub_dir)?;
    ensure!(!ok && args.is_empty(), "{}: the start script started a node from HOSTNAME=shoal: {args:?}", sts.file);
    Ok(())
}
