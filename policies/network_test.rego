package portcullis.network_test

import rego.v1

cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": ["api.github.com", "*.pypi.org"], "allow_cidrs": ["10.1.2.3", "192.0.2.0/28", "::1", "fd00:ec2::254"], "protected_paths": []}

open_metadata_cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": [], "allow_cidrs": ["169.254.169.254"], "protected_paths": []}

broad_cfg := {"workspace_roots": ["/work/ws"], "allow_hosts": ["metadata.google.internal"], "allow_cidrs": ["169.254.0.0/16", "0.0.0.0/0"], "protected_paths": []}

ids(s) := {r.rule | some r in s}

denies(i, id) if id in ids(data.portcullis.network.deny) with input as i with data.config as cfg

req(host, ips, class) := {"kind": "http_request", "via": "egress", "http": {"url": concat("", ["https://", host, "/"]), "method": "GET", "scheme": "https", "host": host, "port": 443, "path": "/", "ips": ips, "ip_class": class, "ip_literal": false}}

# === network.scheme ===

test_ftp_scheme_denied if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "ftp://files.example.com/x", "method": "GET", "scheme": "ftp", "host": "files.example.com", "port": 21, "path": "/x", "ips": ["93.184.216.34"], "ip_class": "public", "ip_literal": false}} with data.config as cfg
	d.outcome == "deny"
	"network.scheme" in ids(d.reasons)
}

test_other_schemes_denied if {
	every s in ["file", "gopher", "ldap", "dict", "jar", "FTP"] {
		denies({"kind": "http_request", "via": "egress", "http": {"scheme": s, "host": "files.example.com", "port": 0, "ips": [], "ip_literal": false}}, "network.scheme")
	}
}

test_web_schemes_and_connect_allowed if {
	every s in ["http", "https", "ws", "wss", "", "HTTPS"] {
		not denies({"kind": "http_request", "via": "egress", "http": {"scheme": s, "host": "files.example.com", "port": 443, "ips": ["93.184.216.34"], "ip_class": "public", "ip_literal": false}}, "network.scheme")
	}
}

# === network.no_host ===

test_missing_host_denied if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "https:///x", "method": "GET", "scheme": "https", "host": "", "port": 443, "path": "/x", "ips": [], "ip_literal": false}} with data.config as cfg
	d.outcome == "deny"
	"network.no_host" in ids(d.reasons)
}

test_present_host_not_no_host if {
	not denies(req("example.com", ["93.184.216.34"], "public"), "network.no_host")
}

# === network.metadata ===

test_metadata_address_denied if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "method": "GET", "scheme": "http", "host": "169.254.169.254", "port": 80, "path": "/latest/meta-data/iam/security-credentials/", "ips": ["169.254.169.254"], "ip_class": "metadata", "ip_literal": true}} with data.config as cfg
	d.outcome == "deny"
	"network.metadata" in ids(d.reasons)
}

test_metadata_not_opened_by_broad_cidr_or_name if {
	s := data.portcullis.network.deny with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://metadata.google.internal/computeMetadata/v1/", "method": "GET", "scheme": "http", "host": "metadata.google.internal", "port": 80, "path": "/computeMetadata/v1/", "ips": ["169.254.169.254"], "ip_class": "metadata", "ip_literal": false}} with data.config as broad_cfg
	"network.metadata" in ids(s)
}

test_metadata_name_denied_before_resolution if {
	denies({"kind": "http_request", "via": "egress", "http": {"scheme": "http", "host": "metadata.google.internal", "port": 80, "ips": [], "ip_literal": false}}, "network.metadata")
}

test_metadata_opened_by_exact_address if {
	s := data.portcullis.network.deny with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://169.254.169.254/latest/meta-data/", "method": "GET", "scheme": "http", "host": "169.254.169.254", "port": 80, "path": "/latest/meta-data/", "ips": ["169.254.169.254"], "ip_class": "metadata", "ip_literal": true}} with data.config as open_metadata_cfg
	count(s) == 0
}

test_ipv6_metadata_opened_by_exact_address if {
	s := data.portcullis.network.deny with input as {"kind": "http_request", "via": "egress", "http": {"scheme": "http", "host": "fd00:ec2::254", "port": 80, "ips": ["fd00:ec2::254"], "ip_class": "metadata", "ip_literal": true}} with data.config as cfg
	not "network.metadata" in ids(s)
}

test_metadata_like_public_name_allowed if {
	not denies(req("metadata.example.com", ["93.184.216.34"], "public"), "network.metadata")
}

# === network.private_address ===

test_private_classes_denied if {
	every c in [["127.0.0.1", "loopback"], ["10.0.0.5", "private"], ["172.16.3.4", "private"], ["192.168.1.1", "private"], ["100.64.0.9", "cgnat"], ["169.254.10.10", "link_local"], ["0.0.0.0", "unspecified"], ["224.0.0.251", "multicast"], ["203.0.113.7", "documentation"], ["240.0.0.1", "reserved"], ["fe80::1", "link_local"], ["fc00::7", "private"]] {
		denies(req("internal.example.com", [c[0]], c[1]), "network.private_address")
	}
}

test_private_address_through_decision if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://db.internal:5432/", "method": "GET", "scheme": "http", "host": "db.internal", "port": 5432, "path": "/", "ips": ["10.0.0.5"], "ip_class": "private", "ip_literal": false}} with data.config as cfg
	d.outcome == "deny"
	"network.private_address" in ids(d.reasons)
}

test_unknown_address_class_fails_closed if {
	denies(req("odd.example.com", ["198.18.0.1"], "benchmarking"), "network.private_address")
}

test_documentation_range_is_not_public if {
	# The test suite's emulated external hosts live in 192.0.2.0/24 and friends.
	denies(req("api.example.net", ["198.51.100.20"], "documentation"), "network.private_address")
}

test_private_allowed_when_every_address_listed if {
	not denies(req("svc.internal", ["10.1.2.3"], "private"), "network.private_address")
	not denies(req("emulated.example", ["192.0.2.5", "192.0.2.10"], "documentation"), "network.private_address")
	not denies(req("localhost", ["::1"], "loopback"), "network.private_address")
}

test_private_denied_when_one_address_not_listed if {
	denies(req("emulated.example", ["192.0.2.5", "192.0.2.200"], "documentation"), "network.private_address")
}

test_allowlisted_name_does_not_open_private_address if {
	# DNS rebinding: an allowlisted name that resolves to an internal address.
	denies(req("files.pypi.org", ["127.0.0.1"], "loopback"), "network.private_address")
}

test_localhost_name_denied_before_resolution if {
	denies({"kind": "http_request", "via": "egress", "http": {"scheme": "http", "host": "localhost", "port": 8080, "ips": [], "ip_literal": false}}, "network.private_address")
	denies({"kind": "http_request", "via": "egress", "http": {"scheme": "http", "host": "app.localhost", "port": 8080, "ips": [], "ip_literal": false}}, "network.private_address")
}

test_localhost_lookalike_allowed if {
	not denies(req("localhost.example.com", ["93.184.216.34"], "public"), "network.private_address")
	not denies({"kind": "http_request", "via": "egress", "http": {"scheme": "https", "host": "example.com", "port": 443, "ips": [], "ip_literal": false}}, "network.private_address")
}

test_public_address_allowed if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "https://example.com/", "method": "GET", "scheme": "https", "host": "example.com", "port": 443, "path": "/", "ips": ["93.184.216.34"], "ip_class": "public", "ip_literal": false}} with data.config as cfg
	d.outcome == "allow"
}

# === network.ip_literal ===

test_public_ip_literal_denied if {
	d := data.portcullis.decision with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://93.184.216.34/upload", "method": "POST", "scheme": "http", "host": "93.184.216.34", "port": 80, "path": "/upload", "ips": ["93.184.216.34"], "ip_class": "public", "ip_literal": true}} with data.config as cfg
	d.outcome == "deny"
	"network.ip_literal" in ids(d.reasons)
}

test_listed_ip_literal_allowed if {
	s := data.portcullis.network.deny with input as {"kind": "http_request", "via": "egress", "http": {"url": "http://10.1.2.3:8080/", "method": "GET", "scheme": "http", "host": "10.1.2.3", "port": 8080, "path": "/", "ips": ["10.1.2.3"], "ip_class": "private", "ip_literal": true}} with data.config as cfg
	count(s) == 0
}

test_ipv6_literal_loopback_allowed_by_bare_address if {
	s := data.portcullis.network.deny with input as {"kind": "http_request", "via": "egress", "http": {"scheme": "http", "host": "::1", "port": 8080, "ips": ["::1"], "ip_class": "loopback", "ip_literal": true}} with data.config as cfg
	count(s) == 0
}

test_name_is_not_ip_literal if {
	not denies(req("example.com", ["93.184.216.34"], "public"), "network.ip_literal")
}

# === allowlist matching (used by the flow rules) ===

test_host_allowlist_exact_and_wildcard if {
	data.portcullis.network.allowlisted with input as req("api.github.com", ["140.82.112.5"], "public") with data.config as cfg
	data.portcullis.network.allowlisted with input as req("files.pypi.org", ["151.101.0.223"], "public") with data.config as cfg
	data.portcullis.network.allowlisted with input as req("a.b.pypi.org", ["151.101.0.223"], "public") with data.config as cfg
	data.portcullis.network.allowlisted with input as req("API.GitHub.com.", ["140.82.112.5"], "public") with data.config as cfg
}

test_host_allowlist_near_misses if {
	not data.portcullis.network.allowlisted with input as req("pypi.org", ["151.101.0.223"], "public") with data.config as cfg
	not data.portcullis.network.allowlisted with input as req("evilpypi.org", ["151.101.0.223"], "public") with data.config as cfg
	not data.portcullis.network.allowlisted with input as req("github.com", ["140.82.112.3"], "public") with data.config as cfg
	not data.portcullis.network.allowlisted with input as req("api.github.com.evil.example", ["93.184.216.34"], "public") with data.config as cfg
}

test_cidr_allowlist if {
	data.portcullis.network.allowlisted with input as req("x.example", ["192.0.2.3"], "documentation") with data.config as cfg
	not data.portcullis.network.allowlisted with input as req("x.example", [], "public") with data.config as cfg
	not data.portcullis.network.allowlisted with input as req("x.example", ["10.1.2.4"], "private") with data.config as cfg
}

test_no_http_facet_no_network_rules if {
	s := data.portcullis.network.deny with input as {"kind": "tool_call", "via": "mcp", "tool": {"server": "fs", "name": "read_file", "arguments": {}}} with data.config as cfg
	count(s) == 0
}
