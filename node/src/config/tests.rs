use super::*;

const GOOD: &str = r#"
[node]
id = 1
data_dir = "data/node-1"

[http]
listen = "127.0.0.1:7000"

[peer]
listen = "127.0.0.1:7001"

[tls]
ca_cert = "certs/ca.pem"
cert = "certs/node-1.pem"
key = "certs/node-1.key"

[cluster]
initial_members = [
  { id = 1, peer_addr = "127.0.0.1:7001", http_addr = "127.0.0.1:7000" },
  { id = 2, peer_addr = "127.0.0.1:7011", http_addr = "127.0.0.1:7010" },
]
"#;

fn with(edit: &str) -> Result<Config, ConfigError> {
    let mut table: toml::Table = toml::from_str(GOOD).expect("GOOD parses");
    apply_override(&mut table, edit)?;
    let text = toml::to_string(&table).expect("serialises");
    Config::from_toml(&text)
}

fn bad_field(edit: &str) -> String {
    match with(edit) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("{edit}: expected an invalid field, got {other:?}"),
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let c = Config::from_toml(GOOD).expect("valid");
    assert_eq!(c.node.id, 1);
    assert_eq!(c.membership, MembershipSection::default());
    assert_eq!(c.cluster.initial_members.len(), 2);
    assert!(!c.testing.fault_injection);
}

#[test]
fn unknown_fields_are_refused() {
    let err = Config::from_toml(&format!("{GOOD}\n[log]\nfilterr = \"x\"\n")).unwrap_err();
    assert!(err.to_string().contains("filterr"), "{err}");
    let err = with("membership.heartbeat = \"1s\"").unwrap_err();
    assert!(err.to_string().contains("heartbeat"), "{err}");
}

#[test]
fn validation_names_the_bad_field() {
    assert_eq!(bad_field("node.id=0"), "node.id");
    assert_eq!(bad_field("membership.down_after_missed=0"), "membership.down_after_missed");
    assert_eq!(bad_field("membership.heartbeat_interval=\"0s\""), "membership.heartbeat_interval");
    assert_eq!(bad_field("peer.keep_alive_interval=\"20s\""), "peer.keep_alive_interval");
    assert_eq!(bad_field("peer.max_frame_bytes=10"), "peer.max_frame_bytes");
    assert_eq!(bad_field("peer.listen=\"127.0.0.1:7000\""), "peer.listen");
    assert_eq!(bad_field("http.body_limit_bytes=0"), "http.body_limit_bytes");
    assert_eq!(bad_field("log.filter=\"info,[[\""), "log.filter");
    assert_eq!(bad_field("node.id=3"), "cluster.join");
    assert_eq!(bad_field("supervisor.restart_backoff_max=\"1ms\""), "supervisor.restart_backoff_max");
    assert_eq!(bad_field("raft.partitions=0"), "raft.partitions");
    assert_eq!(bad_field("raft.election_timeout_max=\"400ms\""), "raft.election_timeout_max");
    assert_eq!(bad_field("raft.election_timeout_min=\"150ms\""), "raft.election_timeout_min");
    assert_eq!(bad_field("chat.max_body_bytes=0"), "chat.max_body_bytes");
    assert_eq!(bad_field("chat.max_body_bytes=65537"), "chat.max_body_bytes");
    assert_eq!(with("chat.max_body_bytes=100").expect("valid").chat.max_body_bytes, 100);
    assert_eq!(bad_field("chat.max_frame_bytes=1000"), "chat.max_frame_bytes");
    assert_eq!(bad_field("chat.max_frame_bytes=2000000"), "chat.max_frame_bytes");
    assert_eq!(with("chat.max_frame_bytes=5000").expect("valid").chat.max_frame_bytes, 5000);
    assert_eq!(bad_field("chat.session_queue=1"), "chat.session_queue");
    assert_eq!(bad_field("chat.heartbeat=\"10ms\""), "chat.heartbeat");
    assert_eq!(bad_field("chat.offline_after=\"15s\""), "chat.offline_after");
    assert_eq!(with("chat.heartbeat=\"1s\"").expect("valid").chat.heartbeat, Duration::from_secs(1));
}

#[test]
fn member_list_is_checked() {
    let dup = r#"cluster.initial_members=[{id=1, peer_addr="127.0.0.1:7001", http_addr="127.0.0.1:7000"}, {id=1, peer_addr="127.0.0.1:7011", http_addr="a:1"}]"#;
    assert_eq!(bad_field(dup), "cluster.initial_members[1].id");
    let addr = r#"cluster.initial_members=[{id=1, peer_addr="127.0.0.1:7001", http_addr="nope"}]"#;
    assert_eq!(bad_field(addr), "cluster.initial_members[0].http_addr");
    let mismatch = r#"cluster.initial_members=[{id=1, peer_addr="127.0.0.1:9999", http_addr="a:1"}]"#;
    assert_eq!(bad_field(mismatch), "cluster.initial_members");
    let empty = "cluster.initial_members=[]";
    assert_eq!(bad_field(empty), "cluster.initial_members");
}

#[test]
fn joining_node_needs_no_founder_entry() {
    assert!(with("node.id=9").is_err(), "a non-founder without cluster.join is refused");
    let mut table: toml::Table = toml::from_str(GOOD).expect("parses");
    apply_override(&mut table, "node.id=9").expect("set");
    apply_override(&mut table, "cluster.join=[\"127.0.0.1:7001\"]").expect("set");
    apply_override(&mut table, "peer.listen=\"127.0.0.1:7091\"").expect("set");
    let c = Config::from_toml(&toml::to_string(&table).expect("ser")).expect("valid");
    assert_eq!(c.cluster.join, vec!["127.0.0.1:7001".to_string()]);
}

#[test]
fn overrides_parse_values_and_bare_strings() {
    let c = with("log.filter=debug").expect("valid");
    assert_eq!(c.log.filter, "debug");
    let c = with("testing.fault_injection=true").expect("valid");
    assert!(c.testing.fault_injection);
    let c = with("membership.heartbeat_interval=\"250ms\"").expect("valid");
    assert_eq!(c.membership.heartbeat_interval, Duration::from_millis(250));
    assert!(matches!(with("novalue"), Err(ConfigError::Override(_))));
    assert!(matches!(with("a..b=1"), Err(ConfigError::Override(_))));
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let mut c = Config::from_toml(GOOD).expect("valid");
    c.resolve_paths(Path::new("/etc/shoal"));
    assert_eq!(c.tls.cert, PathBuf::from("/etc/shoal/certs/node-1.pem"));
    assert_eq!(c.node.data_dir, PathBuf::from("/etc/shoal/data/node-1"));
}

#[test]
fn generated_config_round_trips() {
    let c = Config::from_toml(GOOD).expect("valid");
    let text = toml::to_string(&c).expect("serialises");
    assert_eq!(Config::from_toml(&text).expect("parses back"), c);
}

/// Every TOML file shipped under `config/` must parse and validate.
#[test]
fn every_file_in_config_dir_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("config dir readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "expected the example and three cluster-3 configs, found {files:?}");
    for f in files {
        Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn rate_limit_policies_are_validated_and_the_defaults_cover_the_api() {
    let c = Config::from_toml(GOOD).expect("valid");
    assert!(c.ratelimit.enabled);
    let api = c.ratelimit.policies.iter().find(|p| p.name == "api").expect("api policy");
    assert_eq!((api.limit, api.window), (100, Duration::from_secs(60)));
    let policy = |routes: &str| {
        format!("ratelimit.policies=[{{name=\"p\",limit=5,window=\"1s\",algorithm=\"token_bucket\",routes={routes}}}]")
    };
    assert!(with(&policy("[\"/v1/*\"]")).is_ok());
    assert_eq!(bad_field(&policy("[]")), "ratelimit.policies[0].routes");
    assert_eq!(bad_field(&policy("[\"v1/*\"]")), "ratelimit.policies[0].routes");
    assert_eq!(
        bad_field("ratelimit.policies=[{name=\"p\",limit=0,window=\"1s\",algorithm=\"token_bucket\",routes=[\"/x\"]}]"),
        "ratelimit.policies[0].limit"
    );
    assert_eq!(
        bad_field(
            "ratelimit.policies=[{name=\"p\",limit=20000,window=\"1s\",algorithm=\"sliding_window\",routes=[\"/x\"]}]"
        ),
        "ratelimit.policies[0].limit"
    );
    assert_eq!(
        bad_field(
            "ratelimit.policies=[{name=\"Bad Name\",limit=1,window=\"1s\",algorithm=\"token_bucket\",routes=[\"/x\"]}]"
        ),
        "ratelimit.policies[0].name"
    );
    let twice = "{name=\"p\",limit=1,window=\"1s\",algorithm=\"token_bucket\",routes=[\"/x\"]}";
    assert_eq!(bad_field(&format!("ratelimit.policies=[{twice},{twice}]")), "ratelimit.policies[1].name");
    assert!(
        with("ratelimit.policies=[{name=\"p\",limit=1,window=\"1s\",algorithm=\"leaky\",routes=[\"/x\"]}]").is_err()
    );
    assert_eq!(bad_field("ratelimit.owner_timeout=\"0s\""), "ratelimit.owner_timeout");
    assert_eq!(bad_field("ratelimit.lease_ttl=\"2s\""), "ratelimit.lease_ttl");
    assert!(with("ratelimit.lease_ttl=\"0s\"").is_ok(), "0s turns leases off");
}

#[test]
fn object_storage_settings_are_validated() {
    assert_eq!(bad_field("objects.chunk_size=100"), "objects.chunk_size");
    assert_eq!(bad_field("objects.write_parallelism=0"), "objects.write_parallelism");
    assert_eq!(bad_field("objects.write_parallelism=65"), "objects.write_parallelism");
    assert_eq!(with("objects.write_parallelism=8").expect("valid").objects.write_parallelism, 8);
    assert_eq!(Config::from_toml(GOOD).expect("valid").objects.write_parallelism, 4);
    assert_eq!(bad_field("objects.gc_grace=\"0s\""), "objects.gc_grace");
    assert_eq!(bad_field("objects.gc_interval=\"0s\""), "objects.gc_interval");
    assert_eq!(bad_field("objects.scrub_bytes_per_sec=1000"), "objects.scrub_bytes_per_sec");
    assert_eq!(bad_field("objects.scrub_interval=\"0s\""), "objects.scrub_interval");
    assert_eq!(Config::from_toml(GOOD).expect("valid").objects.gc_grace, Duration::from_secs(3600));
}
