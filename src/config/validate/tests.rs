//! Settings from whole config texts: defaults, bounds, and the problems with their lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::cloudflare;
use crate::config::settings::{RouteUpstream, Selection};
use crate::policy::client_ip::IpSource;

fn settings_with(extra_server: &str, client_ip: &str) -> (Settings, Problems) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:8443\"\n{extra_server}\n[upstream]\naddress = \"127.0.0.1:3000\"\n\
         [client_ip]\n{client_ip}\n[policies]\nfile = \"partners.toml\"\n\
         [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n"
    );
    let (settings, problems) = settings_from_text(Path::new("/etc/authgate/authgate.toml"), &text);
    (settings.unwrap(), problems)
}

#[test]
fn the_cloudflare_preset_expands_to_the_published_ranges() {
    let (s, problems) = settings_with(
        "",
        "source = \"cf-connecting-ip\"\ntrusted_proxies = [\"cloudflare\", \"10.0.0.0/8\"]",
    );
    assert!(problems.is_empty(), "{problems}");
    let set = &s.fixed.client_ip.trusted_proxies;
    assert_eq!(set.len(), cloudflare::IPV4.len() + cloudflare::IPV6.len() + 1);
    for cidr in cloudflare::IPV4.iter().chain(cloudflare::IPV6.iter()) {
        let net: ipnet::IpNet = cidr.parse().unwrap();
        assert!(set.contains(net.network()) && set.contains(net.broadcast()), "{cidr}");
    }
    assert!(set.contains("10.1.2.3".parse().unwrap()));
    assert!(!set.contains("127.0.0.1".parse().unwrap()));
    assert_eq!(s.fixed.client_ip.source, IpSource::CfConnectingIp);

    let (_, problems) = settings_with("", "trusted_proxies = [\"Cloudflare\"]");
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert!(
        problems.0[0].to_string().starts_with("/etc/authgate/authgate.toml:"),
        "{problems}"
    );
}

#[test]
fn server_tls_names_its_files_relative_to_the_config_with_their_lines() {
    let (s, problems) = settings_with(
        "[server.tls]\ncert_file = \"certs/origin.pem\"\nkey_file = \"/keys/origin.key\"\nclient_ca_file = \"certs/ca.pem\"\n",
        "",
    );
    assert!(problems.is_empty(), "{problems}");
    let tls = s.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/authgate/certs/origin.pem"));
    assert_eq!(tls.cert_line, 4);
    assert_eq!(tls.key_file, Path::new("/keys/origin.key"));
    assert_eq!(tls.key_line, 5);
    assert_eq!(
        tls.client_ca_file,
        Some((PathBuf::from("/etc/authgate/certs/ca.pem"), 6))
    );

    let (s, problems) = settings_with("[server.tls]\ncert_file = \"\"\nkey_file = \"k.pem\"\n", "");
    assert!(s.tls.unwrap().client_ca_file.is_none());
    assert_eq!(problems.0.len(), 1, "{problems}");
    assert!(
        problems.0[0]
            .to_string()
            .contains(":4: server.tls.cert_file must name a PEM file"),
        "{problems}"
    );

    let (s, problems) = settings_with("", "");
    assert!(s.tls.is_none() && problems.is_empty());
}

#[test]
fn clusters_and_the_routes_that_pick_them() {
    let text = "[server]\nlisten = \"127.0.0.1:8443\"\n\
         [upstream]\naddress = \"127.0.0.1:3000\"\nread_timeout = \"2s\"\n\
         [[upstreams]]\nname = \"org-api\"\nbackends = [\"127.0.0.1:3001\", \"localhost:3002\"]\n\
         selection = \"consistent_hash\"\n\
         health_check = { path = \"/health\", interval = \"250ms\", unhealthy_after = 3 }\n\
         [policies]\nfile = \"partners.toml\"\n\
         [[routes]]\nname = \"health\"\npath = \"/health\"\nauth = \"none\"\n\
         [[routes]]\nname = \"stream\"\npath = \"/v1/stream/**\"\nauth = \"none\"\n\
         upstream = \"org-api\"\nread_timeout = \"5m\"\n";
    let (s, problems) = settings_from_text(Path::new("/etc/authgate/authgate.toml"), text);
    assert!(problems.is_empty(), "{problems}");
    let s = s.unwrap();
    let names: Vec<&str> = s.upstreams.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["default", "org-api"]);
    let default = &s.upstreams[0];
    assert_eq!(default.selection, Selection::RoundRobin);
    assert_eq!(default.read_timeout, Duration::from_secs(2));
    assert!(default.health_check.is_none());
    assert_eq!(default.backends[0].addr, Some("127.0.0.1:3000".parse().unwrap()));
    let org = &s.upstreams[1];
    assert_eq!(org.selection, Selection::ConsistentHash);
    assert_eq!(org.read_timeout, Duration::from_secs(30), "the default");
    // an IP:port is known at once; a name waits for config::load to resolve it
    assert_eq!(org.backends[0].addr, Some("127.0.0.1:3001".parse().unwrap()));
    assert_eq!((org.backends[1].addr, org.backends[1].line), (None, 8));
    let hc = org.health_check.as_ref().unwrap();
    assert_eq!(hc.interval, Duration::from_millis(250));
    assert_eq!(hc.timeout, Duration::from_secs(1), "the default");
    assert_eq!((hc.unhealthy_after, hc.healthy_after), (3, 2));
    assert_eq!(
        s.route_upstream(0),
        RouteUpstream {
            cluster: 0,
            read_timeout: None,
            websocket: false
        }
    );
    assert_eq!(
        s.route_upstream(1),
        RouteUpstream {
            cluster: 1,
            read_timeout: Some(Duration::from_secs(300)),
            websocket: false
        }
    );
}

#[test]
fn deadlines_and_semicolons_have_defaults_and_bounds() {
    let (s, problems) = settings_with("", "");
    assert!(problems.0.is_empty(), "{problems}");
    assert_eq!(s.deadlines.header_timeout, Duration::from_secs(10));
    assert_eq!(s.deadlines.admin_max_connections, 64);
    assert_eq!(s.deadlines.body_timeout, Duration::from_secs(10));
    assert_eq!(s.deadlines.send_timeout, Duration::from_secs(30));
    assert_eq!(s.deadlines.max_head_bytes, 65536);
    assert!(!s.fixed.allow_path_semicolons);
    assert!(!s.fixed.jwt.require_key_id);
    let (s, problems) = settings_with(
        "header_timeout = \"1500ms\"\nadmin_max_connections = 3\nallow_path_semicolons = true",
        "",
    );
    assert!(problems.0.is_empty(), "{problems}");
    assert_eq!(s.deadlines.header_timeout, Duration::from_millis(1500));
    assert_eq!(s.deadlines.admin_max_connections, 3);
    for (text, bytes) in [
        ("max_head_bytes = 32768", 32768),
        ("max_head_bytes = \"32KB\"", 32000),
        ("max_head_bytes = \"1MiB\"", 1 << 20),
    ] {
        let (s, problems) = settings_with(&format!("{text}\nbody_timeout = \"2s\"\nsend_timeout = \"250ms\""), "");
        assert!(problems.0.is_empty(), "{problems}");
        assert_eq!(s.deadlines.max_head_bytes, bytes, "{text}");
        assert_eq!(s.deadlines.body_timeout, Duration::from_secs(2));
        assert_eq!(s.deadlines.send_timeout, Duration::from_millis(250));
    }
    assert!(s.fixed.allow_path_semicolons);
    for (bad, what) in [
        ("header_timeout = \"0s\"", "server.header_timeout must be more than 0"),
        ("header_timeout = \"10\"", "server.header_timeout"),
        (
            "admin_max_connections = 0",
            "server.admin_max_connections: 0 is not 1..1000000",
        ),
        ("admin_max_connections = -5", "server.admin_max_connections"),
        ("body_timeout = \"0s\"", "server.body_timeout must be more than 0"),
        ("send_timeout = \"soon\"", "server.send_timeout"),
        ("max_head_bytes = 100", "server.max_head_bytes: 100 is not a size"),
        ("max_head_bytes = \"2MiB\"", "server.max_head_bytes"),
        ("max_head_bytes = \"64 kilos\"", "server.max_head_bytes"),
    ] {
        let (_, problems) = settings_with(bad, "");
        assert!(problems.to_string().contains(what), "{bad}: {problems}");
    }
}

#[test]
fn route_methods_are_upper_case_tokens_and_websocket_is_per_route() {
    let text = |method: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8443\"\n[upstream]\naddress = \"127.0.0.1:3000\"\n\
             [policies]\nfile = \"partners.toml\"\n\
             [[routes]]\nname = \"ws\"\npath = \"/ws\"\nauth = \"none\"\nmethod = \"{method}\"\nwebsocket = true\n"
        )
    };
    let path = Path::new("/etc/authgate/authgate.toml");
    let (s, problems) = settings_from_text(path, &text("GET"));
    assert!(problems.is_empty(), "{problems}");
    assert!(s.unwrap().route_upstream(0).websocket);
    let (_, problems) = settings_from_text(path, &text("post"));
    assert!(
        problems.to_string().contains("method \"post\" has a lowercase letter"),
        "{problems}"
    );
    let (_, problems) = settings_from_text(path, &text("G T"));
    assert!(
        problems.to_string().contains("is not an HTTP method token"),
        "{problems}"
    );
}

#[test]
fn durations_need_units() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    for bad in ["10", "", "s", "ten seconds", "-1s", "1d"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
