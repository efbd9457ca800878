use super::*;

fn image(r: &str) -> ImageRef {
    ImageRef::parse(r).expect("valid")
}

#[test]
fn globs_match_within_and_across_segments() {
    let one = Glob::new("ghcr.io/acme/*").expect("glob");
    assert!(one.matches(&image("ghcr.io/acme/app:v1")));
    assert!(!one.matches(&image("ghcr.io/acme/team/app:v1")));
    let many = Glob::new("ghcr.io/acme/**").expect("glob");
    assert!(many.matches(&image(&format!(
        "ghcr.io/acme/team/app@sha256:{}",
        "a".repeat(64)
    ))));
    assert!(many.matches(&image("ghcr.io/acme/team/app:v1")));
    assert!(!many.matches(&image("ghcr.io/acme-evil/app:v1")));
    assert!(Glob::new("index.docker.io/library/*")
        .expect("glob")
        .matches(&image("nginx:1")));
    assert!(Glob::new("**")
        .expect("glob")
        .matches(&image("127.0.0.1:5000/x/y:z")));
    let tagged = Glob::new("ghcr.io/acme/app:v*").expect("glob");
    assert!(
        tagged.matches(&image("ghcr.io/acme/app:v2"))
            && !tagged.matches(&image("ghcr.io/acme/app:dev"))
    );
}

/// Every spelling a runtime pulls from the same registry matches the same globs (however
/// the glob spells its registry) and has the same canonical parts.
#[test]
fn every_spelling_of_an_image_matches_the_same_policies() {
    let globs: Vec<Glob> = [
        "ghcr.io/acme/**",
        "GHCR.IO:443/acme/app",
        "docker.io/library/*",
        "index.docker.io/acme/**",
        "nginx",
        "acme/*",
        "localhost:5000/**",
        "127.0.0.1:5000/**",
        "*.example.com/**",
    ]
    .iter()
    .map(|g| Glob::new(g).expect("glob"))
    .collect();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "ghcr.io/acme/app:v1",
                "GHCR.IO/acme/app:v1",
                "Ghcr.Io/acme/app:v1",
                "ghcr.io:443/acme/app:v1",
            ],
            "ghcr.io/acme/app:v1",
        ),
        (
            &[
                "nginx",
                "library/nginx",
                "docker.io/nginx",
                "DOCKER.IO/library/nginx",
                "index.docker.io/library/nginx:latest",
                "registry-1.docker.io/nginx",
                "docker.io:443/library/nginx",
            ],
            "docker.io/library/nginx:latest",
        ),
        (
            &[
                "acme/app:1",
                "docker.io/acme/app:1",
                "INDEX.DOCKER.IO/acme/app:1",
                "registry.hub.docker.com/acme/app:1",
            ],
            "docker.io/acme/app:1",
        ),
        (
            &[
                "localhost:5000/x:1",
                "LOCALHOST:5000/x:1",
                "LocalHost:05000/x:1",
            ],
            "localhost:5000/x:1",
        ),
        (
            &[
                "127.0.0.1:5000/x:1",
                "[::ffff:127.0.0.1]:5000/x:1",
                "0x7f.1:5000/x:1",
            ],
            "127.0.0.1:5000/x:1",
        ),
        (
            &["r.example.com/x:1", "R.EXAMPLE.COM:443/x:1"],
            "r.example.com/x:1",
        ),
    ];
    for (spellings, normalized) in cases {
        let want = image(normalized);
        let matched = |i: &ImageRef| -> Vec<bool> { globs.iter().map(|g| g.matches(i)).collect() };
        assert!(
            matched(&want).iter().any(|m| *m),
            "{normalized} matches some glob"
        );
        for spelling in *spellings {
            let got = image(spelling);
            assert_eq!(
                (&got.registry, &got.repository, &got.tag, got.to_string()),
                (
                    &want.registry,
                    &want.repository,
                    &want.tag,
                    want.to_string()
                ),
                "{spelling:?}"
            );
            assert_eq!(matched(&got), matched(&want), "{spelling:?}");
        }
    }
    assert!(
        !globs[0].matches(&image("ghcr.io:8443/acme/app")),
        "another port is another registry"
    );
    assert!(Glob::new("ghcr.io:99999/**").is_err());
}

fn parse_yaml(yaml: &str) -> Result<ImagePolicy, String> {
    let doc: serde_json::Value = yaml_serde::from_str(yaml).expect("yaml");
    parse(
        doc,
        "test.yaml",
        Path::new("/nonexistent"),
        &Arc::new(TrustRoot::public_good()),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn accepts_a_policy_controller_cluster_image_policy() {
    let policy = parse_yaml(
        r#"
apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata: {name: release}
spec:
  images: [{glob: "ghcr.io/acme/**"}]
  authorities:
  - keyless:
      url: https://fulcio.sigstore.dev
      identities:
      - issuer: https://token.actions.githubusercontent.com
        subjectRegExp: https://github.com/acme/.*
    ctlog: {url: https://rekor.sigstore.dev}
  - name: release-key
    key:
      data: |
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+
        kvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==
        -----END PUBLIC KEY-----
  mode: warn
"#,
    )
    .expect("parses");
    assert_eq!(policy.name, "release");
    assert_eq!(policy.mode, Mode::Warn);
    assert_eq!(policy.authorities.len(), 2);
    assert!(matches!(
        policy.authorities[0].kind,
        AuthorityKind::Keyless { .. }
    ));
    assert!(
        matches!(&policy.authorities[1].kind, AuthorityKind::Key { keys, tlog: None } if keys.len() == 1)
    );
}

#[test]
fn rejects_unsupported_or_incomplete_policies_clearly() {
    let base = "kind: ClusterImagePolicy\nmetadata: {name: p}\nspec:\n  images: [{glob: 'x/**'}]\n";
    let cases = [
            (format!("{base}  authorities: []\n"), "no authorities"),
            (format!("{base}  authorities: [{{key: {{kms: 'gcpkms://x'}}}}]\n"), "kms"),
            (format!("{base}  authorities: [{{keyless: {{identities: [{{issuer: x}}]}}}}]\n"), "subject"),
            (format!("{base}  authorities: [{{keyless: {{identities: [{{subject: x}}]}}, key: {{data: x}}}}]\n"), "exactly one"),
            (format!("{base}  authorities: [{{key: {{data: 'not pem'}}}}]\n"), "no PEM public key"),
            (format!("{base}  authorities: [{{key: {{file: missing.pub}}}}]\n"), "missing.pub"),
            (format!("{base}  authorities: [{{keyless: {{identities: [{{subjectRegExp: '('}}]}}}}]\n"), "regular expression"),
            (format!("{base}  authorities: [{{keyless: {{identities: [{{subject: x}}]}}}}]\n  policy: {{type: cue}}\n"), "policy"),
        ];
    for (yaml, want) in cases {
        let err = parse_yaml(&yaml).expect_err(&yaml);
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
}

const KEY: &str = "        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELKhD7F5OKy77Z582Y6h0u1J3GNA+
        kvUsh4eKpd1lwkDAzfFDs7yXEExsEkPPuiQJBelDT68n7PDIWB/QEY7mrA==
        -----END PUBLIC KEY-----";

#[test]
fn an_image_policy_is_limited_to_the_namespaces_it_selects() {
    let policy = parse_yaml(&format!(
        r#"
apiVersion: verdict.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: prod-only}}
spec:
  images: [{{glob: "ghcr.io/acme/**"}}]
  namespaces: ["team-*", "payments"]
  namespaceSelector:
    matchLabels: {{tier: prod}}
  authorities:
  - key:
      data: |
{KEY}
"#
    ))
    .expect("parses");
    assert!(policy.scope.is_scoped());
    let prod = std::collections::BTreeMap::from([("tier".to_string(), "prod".to_string())]);
    let dev = std::collections::BTreeMap::from([("tier".to_string(), "dev".to_string())]);
    let at = |name, labels| Some(Namespace { name, labels });
    assert!(policy.applies_in(at("team-a", Some(&prod)).as_ref()));
    assert!(policy.applies_in(at("payments", Some(&prod)).as_ref()));
    assert!(!policy.applies_in(at("team-a", Some(&dev)).as_ref()));
    assert!(!policy.applies_in(at("web", Some(&prod)).as_ref()));
    assert!(
        policy.applies_in(at("team-new", None).as_ref()),
        "unknown labels never exempt"
    );
    assert!(
        policy.applies_in(None),
        "no namespace given: no policy is scoped"
    );
}

#[test]
fn a_cluster_image_policy_stays_cluster_wide() {
    let refused = parse_yaml(&format!(
        r#"
apiVersion: policy.sigstore.dev/v1beta1
kind: ClusterImagePolicy
metadata: {{name: scoped}}
spec:
  images: [{{glob: "ghcr.io/acme/**"}}]
  namespaceSelector: {{matchLabels: {{tier: prod}}}}
  authorities:
  - key:
      data: |
{KEY}
"#
    ))
    .expect_err("policy-controller has no such field");
    assert!(refused.to_string().contains("ImagePolicy"), "{refused}");
}
