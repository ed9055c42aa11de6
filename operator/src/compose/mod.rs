//! From the compose file in a `ServiceStack` to a [`Project`]: the networks, volumes and
//! containers the stack should have, in start order, each with a config hash.
//!
//! Parsing and validation of the compose format is compose_spec's job. This module adds what the
//! operator needs on top: interpolation from `spec.variables`, a clear refusal of every key it
//! cannot honour yet (a key silently ignored is a production surprise), and a normalized
//! [`ServiceSpec`] whose hash decides when a container must be recreated.

mod compose_v1;
mod interpolate;
mod local;
mod model;
mod translate;

use std::collections::BTreeMap;

pub use interpolate::{interpolate, InterpolationError};
pub use local::{build_tag, parse_env_file, LocalInputs, Origin, References};
pub use model::*;

use crate::api::{Failure, Reason, ServiceStack};

/// Builds the project a stack in a cluster asks for. Pure: no Docker, no clock. This is the
/// compose file's part of the spec check only: [`crate::admit::admit`] runs it and then checks
/// the rest of the spec (health, backups, maintenance) against the project.
///
/// Error messages quote the compose file, and after interpolation the file holds the values of
/// `spec.variables`: every one of them is masked out of the message, whichever check failed.
pub fn load(stack: &ServiceStack) -> Result<Project, Failure> {
    load_from(stack, Origin::Cluster)
}

/// Builds the project of a stack read from a manifest file by `stackwarden local`, with what
/// the edge read of the env files and build contexts its compose file names (see
/// [`references`]). Values of env files are masked out of errors like variables are.
pub fn load_local(stack: &ServiceStack, inputs: &LocalInputs) -> Result<Project, Failure> {
    load_from(stack, Origin::Local(inputs))
}

pub(crate) fn load_from(stack: &ServiceStack, origin: Origin<'_>) -> Result<Project, Failure> {
    load_unmasked(stack, origin).map_err(|mut e| {
        e.message = mask(&e.message, &secrets(stack, origin), &[]);
        e
    })
}

/// Every value an error must not show: the variables, and in local mode each env file's values.
pub(crate) fn secrets(stack: &ServiceStack, origin: Origin<'_>) -> BTreeMap<String, String> {
    let mut all = stack.spec.variables.clone();
    if let Origin::Local(inputs) = origin {
        let values = inputs
            .env_files
            .values()
            .filter_map(|t| t.as_ref().ok())
            .filter_map(|t| parse_env_file(t).ok())
            .flatten();
        for (i, (_, v)) in values.enumerate() {
            all.insert(format!("\0env{i}"), v);
        }
    }
    all
}

/// The env files and build contexts a local stack's compose file names, resolved against
/// `dir` (the manifest file's directory), for the edge to read. A compose file that does not
/// parse names nothing; [`load_local`] then says what is wrong with it.
pub fn references(stack: &ServiceStack, dir: &std::path::Path) -> References {
    let Ok(mut doc) = parsed(stack) else {
        return References::default();
    };
    match local::take_extras(&mut doc) {
        Ok(extras) => local::references_of(&extras, dir),
        Err(_) => References::default(),
    }
}

/// The compose file, parsed and interpolated.
fn parsed(stack: &ServiceStack) -> Result<yaml_serde::Value, Failure> {
    let mut doc: yaml_serde::Value =
        yaml_serde::from_str(&stack.spec.compose.file).map_err(|e| {
            Failure::new(
                Reason::MalformedCompose,
                format!("spec.compose.file is not valid YAML: {e}"),
            )
        })?;
    interpolate::interpolate_value(&mut doc, &stack.spec.variables).map_err(|e| {
        let reason = match e {
            InterpolationError::Missing { .. } | InterpolationError::Required { .. } => {
                Reason::MissingVariable
            }
            InterpolationError::Syntax { .. } => Reason::MalformedCompose,
        };
        Failure::new(reason, format!("spec.compose.file: {e}"))
    })?;
    Ok(doc)
}

pub(crate) use crate::api::mask;

fn load_unmasked(stack: &ServiceStack, origin: Origin<'_>) -> Result<Project, Failure> {
    let project = stack.project_name();
    validate_project_name(&project)?;
    let mut doc = parsed(stack)?;
    // docker-compose's view of each service is taken with every key it has: compose_v1 falls
    // back to the operator's own hash for keys it does not reproduce (env_file, build).
    let services_doc = doc.get("services").cloned();
    let extras = local::take_extras(&mut doc)?;
    translate::check_supported_keys(&doc)?;
    let compose: compose_spec::Compose = yaml_serde::from_value(doc).map_err(|e| {
        Failure::new(
            Reason::MalformedCompose,
            format!("spec.compose.file is not a valid compose file: {e}"),
        )
    })?;
    let mut project = translate::project(&project, compose)?;
    apply_extras(&mut project, &extras, origin)?;
    attach_compose_v1(&mut project, services_doc.as_ref());
    Ok(project)
}

/// Applies `container_name`, `env_file` and `build` to the translated services.
fn apply_extras(
    project: &mut Project,
    extras: &BTreeMap<String, local::Extras>,
    origin: Origin<'_>,
) -> Result<(), Failure> {
    let name = project.name.clone();
    for svc in &mut project.services {
        let Some(e) = extras.get(&svc.name) else {
            continue;
        };
        let applied = local::resolve(&name, &svc.name, e, &svc.image, origin)?;
        svc.fixed_name = applied.container_name;
        // Compose's order: env files first, `environment:` over them.
        for (k, v) in applied.env {
            svc.environment.0.entry(k).or_insert(v);
        }
        if let Some(b) = applied.build {
            svc.image = b.image.clone();
            svc.pull_policy = PullPolicy::Never;
            svc.build = Some(b);
        }
    }
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for svc in &project.services {
        if let Some(fixed) = &svc.fixed_name {
            if let Some(other) = names.insert(fixed, &svc.name) {
                return Err(Failure::new(
                    Reason::InvalidField,
                    format!("spec.compose.file: services {other} and {} both set container_name {fixed:?}; container names must be unique", svc.name),
                ));
            }
        }
    }
    Ok(())
}

/// Gives each service docker-compose 1.29's view of it (see [`compose_v1`]).
fn attach_compose_v1(project: &mut Project, services: Option<&yaml_serde::Value>) {
    let names = compose_v1::Names {
        networks: &project.networks,
        volumes: &project.volumes,
    };
    let configs: Vec<_> = project
        .services
        .iter()
        .map(|s| {
            services
                .and_then(|doc| doc.get(s.name.as_str()))
                .and_then(|svc| compose_v1::config(svc, &names))
        })
        .collect();
    for (svc, config) in project.services.iter_mut().zip(configs) {
        svc.compose_v1 = config;
    }
}

/// Compose's own rule, so `docker-compose -p NAME` accepts the same name.
fn validate_project_name(name: &str) -> Result<(), Failure> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Failure::new(
            Reason::InvalidField,
            format!(
                "compose project name {name:?} is invalid: use lowercase letters, digits, '-' and '_', starting with a letter or digit (set spec.compose.projectName)"
            ),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{ComposeSpec, ServiceStackSpec};

    pub(crate) fn stack(file: &str, vars: &[(&str, &str)]) -> ServiceStack {
        let mut s = ServiceStack::new(
            "demo",
            ServiceStackSpec {
                docker: Default::default(),
                compose: ComposeSpec {
                    project_name: None,
                    file: file.to_owned(),
                    adopt: false,
                },
                variables: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                health: Default::default(),
                deletion_policy: Default::default(),
                variables_from: Default::default(),
                rollout: Default::default(),
                key_rotation: Default::default(),
                maintenance: Default::default(),
                backups: Vec::new(),
                suspend: false,
            },
        );
        s.metadata.namespace = Some("ops".into());
        s
    }

    pub(crate) const DEMO: &str = r#"
services:
  backend:
    image: stackwarden-test/demo-app:latest
    command: demo-app --port "8000"
    environment:
      DB_PASSWORD: ${DB_PASSWORD}
      LOG_LEVEL: ${LOG_LEVEL:-info}
    ports: ["127.0.0.1::8000", "9000:9000/udp"]
    depends_on:
      postgres: {condition: service_healthy}
      redis: {condition: service_started}
    mem_limit: 256m
    deploy: {resources: {limits: {cpus: "0.5"}}}
    restart: unless-stopped
    labels: [team=ai]
    user: "1000:1000"
    working_dir: /app
  postgres:
    image: stackwarden-test/postgres:15
    environment: ["POSTGRES_PASSWORD=${DB_PASSWORD}"]
    volumes: [pgdata:/var/lib/postgresql/data, /etc/hosts:/etc/hosts2:ro]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready"]
      interval: 1s
      retries: 3
  redis:
    image: stackwarden-test/redis:7
    entrypoint: ["redis-server"]
volumes:
  pgdata: {}
"#;

    #[test]
    fn loads_the_demo_in_dependency_order() {
        let p = load(&stack(DEMO, &[("DB_PASSWORD", "s3cret")])).unwrap();
        assert_eq!(p.name, "demo");
        let order: Vec<_> = p.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["postgres", "redis", "backend"]);
        let b = p.service("backend").unwrap();
        assert_eq!(
            b.command.as_deref(),
            Some(&["demo-app".to_owned(), "--port".into(), "8000".into()][..])
        );
        assert_eq!(b.environment.0["DB_PASSWORD"], "s3cret");
        assert_eq!(b.environment.0["LOG_LEVEL"], "info");
        assert_eq!(b.memory_bytes, Some(256 * 1024 * 1024));
        assert_eq!(b.nano_cpus, Some(500_000_000));
        assert_eq!(b.restart, RestartPolicy::UnlessStopped);
        assert_eq!(b.labels["team"], "ai");
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(
            b.ports[0],
            PortSpec {
                container_port: 8000,
                protocol: "tcp".into(),
                host_ip: Some("127.0.0.1".into()),
                host_port: None
            }
        );
        assert_eq!(b.ports[1].protocol, "udp");
        assert_eq!(b.ports[1].host_port, Some(9000));
        assert_eq!(
            b.depends_on[0],
            Dependency {
                service: "postgres".into(),
                condition: DependencyCondition::Healthy
            }
        );
        assert_eq!(b.networks[0].network, "demo_default");
        assert_eq!(b.networks[0].aliases, ["backend"]);
        let pg = p.service("postgres").unwrap();
        assert_eq!(pg.environment.0["POSTGRES_PASSWORD"], "s3cret");
        assert_eq!(
            pg.mounts[0],
            MountSpec::Volume {
                source: "demo_pgdata".into(),
                target: "/var/lib/postgresql/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            pg.mounts[1],
            MountSpec::Bind {
                source: "/etc/hosts".into(),
                target: "/etc/hosts2".into(),
                read_only: true
            }
        );
        match pg.healthcheck.as_ref().unwrap() {
            HealthcheckSpec::Check {
                test,
                interval_ns,
                retries,
                ..
            } => {
                assert_eq!(test, &["CMD-SHELL", "pg_isready"]);
                assert_eq!(*interval_ns, Some(1_000_000_000));
                assert_eq!(*retries, Some(3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.networks.len(), 1);
        assert_eq!(p.volumes[0].name, "demo_pgdata");
    }

    #[test]
    fn config_hash_changes_with_the_service_only() {
        let a = load(&stack(DEMO, &[("DB_PASSWORD", "one")])).unwrap();
        let b = load(&stack(DEMO, &[("DB_PASSWORD", "two")])).unwrap();
        let c = load(&stack(DEMO, &[("DB_PASSWORD", "one")])).unwrap();
        assert_eq!(
            a.service("redis").unwrap().config_hash(),
            b.service("redis").unwrap().config_hash()
        );
        assert_ne!(
            a.service("backend").unwrap().config_hash(),
            b.service("backend").unwrap().config_hash()
        );
        assert_eq!(
            a.service("backend").unwrap().config_hash(),
            c.service("backend").unwrap().config_hash()
        );
        assert_ne!(a.spec_hash(), b.spec_hash());
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_errors() {
        let p = load(&stack(DEMO, &[("DB_PASSWORD", "s3cret-value")])).unwrap();
        assert!(!format!("{p:?}").contains("s3cret-value"));
        let err = load(&stack(
            "services: {a: {image: x, command: \"${DB_PASSWORD} ${NOPE}\"}}",
            &[("DB_PASSWORD", "s3cret-value")],
        ))
        .unwrap_err();
        assert_eq!(err.reason, Reason::MissingVariable);
        assert!(
            err.message.contains("NOPE") && !err.message.contains("s3cret-value"),
            "{}",
            err.message
        );
    }

    #[test]
    fn every_bad_input_names_what_to_fix() {
        let cases = [
            ("services: [", Reason::MalformedCompose, "not valid YAML"),
            (
                "services: {a: {image: x, build: .}}",
                Reason::UnsupportedComposeKey,
                "services.a.build",
            ),
            (
                "services: {a: {image: x, deploy: {replicas: 2}}}",
                Reason::UnsupportedComposeKey,
                "services.a.deploy.replicas",
            ),
            (
                "services: {a: {image: x, env_file: .env}}",
                Reason::UnsupportedComposeKey,
                "env_file",
            ),
            (
                "services: {a: {image: x}}\nconfigs: {c: {file: x}}",
                Reason::UnsupportedComposeKey,
                "`configs`",
            ),
            (
                "services: {a: {image: x, ports: [\"nope\"]}}",
                Reason::MalformedCompose,
                "not a valid compose file",
            ),
            (
                "services: {a: {command: x}}",
                Reason::MalformedCompose,
                "services.a.image is required",
            ),
            (
                "services: {a: {image: x, depends_on: [b]}}",
                Reason::UnknownService,
                "`b`",
            ),
            (
                "services: {a: {image: x, depends_on: [b]}, b: {image: x, depends_on: [a]}}",
                Reason::MalformedCompose,
                "cycle",
            ),
            (
                "services: {a: {image: x, volumes: [data:/d]}}",
                Reason::MalformedCompose,
                "`data`",
            ),
            (
                "services: {a: {image: x, volumes: [\"./rel:/d\"]}}",
                Reason::InvalidField,
                "absolute path",
            ),
            (
                "services: {a: {image: x, networks: [back]}}",
                Reason::MalformedCompose,
                "`back`",
            ),
            ("services: {}", Reason::MalformedCompose, "no services"),
        ];
        for (file, reason, needle) in cases {
            let err = load(&stack(file, &[])).expect_err(file);
            assert_eq!(err.reason, reason, "{file}: {}", err.message);
            assert!(err.message.contains(needle), "{file}: {}", err.message);
        }
    }

    #[test]
    fn project_names_follow_compose_rules() {
        let mut s = stack(DEMO, &[("DB_PASSWORD", "x")]);
        s.spec.compose.project_name = Some("Bad Name".into());
        assert_eq!(load(&s).unwrap_err().reason, Reason::InvalidField);
        s.spec.compose.project_name = Some("erni_2".into());
        assert_eq!(
            load(&s).unwrap().services[0].container_name("erni_2"),
            "erni_2-postgres-1"
        );
    }

    #[test]
    fn named_networks_and_external_resources() {
        let file = r#"
services:
  a: {image: x, networks: {front: {aliases: [web]}, default: {}}}
networks:
  front: {driver: bridge}
  shared: {external: true, name: corp-net}
volumes:
  ext: {external: true}
"#;
        let p = load(&stack(file, &[])).unwrap();
        let a = p.service("a").unwrap();
        assert_eq!(a.networks[0].network, "demo_front");
        assert_eq!(a.networks[0].aliases, ["a", "web"]);
        assert_eq!(a.networks[1].network, "demo_default");
        let shared = p.networks.iter().find(|n| n.key == "shared").unwrap();
        assert!(shared.external);
        assert_eq!(shared.name, "corp-net");
        assert!(p.volumes[0].external);
        assert_eq!(p.volumes[0].name, "ext");
    }

    fn local(env: &[(&str, Result<&str, &str>)], contexts: &[(&str, &str)]) -> LocalInputs {
        LocalInputs {
            dir: "/m".into(),
            env_files: env
                .iter()
                .map(|(p, r)| (p.into(), r.map(str::to_owned).map_err(str::to_owned)))
                .collect(),
            contexts: contexts
                .iter()
                .map(|(p, d)| (p.into(), Ok(d.to_string())))
                .collect(),
        }
    }

    const RUNBOOK: &str = r#"
services:
  backend:
    build: {context: ./backend, args: {V: "1"}}
    container_name: tria_aibpo_backend
    env_file: [.env, /etc/erni/extra.env]
    environment: {LOG_LEVEL: debug}
  postgres:
    image: stackwarden-test/postgres:15
    container_name: erni-postgres
"#;

    #[test]
    fn local_env_files_merge_under_environment_and_later_files_win() {
        let inputs = local(
            &[
                (
                    "/m/.env",
                    Ok("PGPASSWORD=from-env-file\nLOG_LEVEL=info\nA=1\n"),
                ),
                ("/etc/erni/extra.env", Ok("A=2\n")),
            ],
            &[("/m/./backend", "digest")],
        );
        let p = load_local(&stack(RUNBOOK, &[]), &inputs).unwrap();
        let b = p.service("backend").unwrap();
        assert_eq!(b.environment.0["PGPASSWORD"], "from-env-file");
        assert_eq!(b.environment.0["LOG_LEVEL"], "debug");
        assert_eq!(b.environment.0["A"], "2");
        assert_eq!(b.container_name("demo"), "tria_aibpo_backend");
        assert_eq!(
            p.service("postgres").unwrap().container_name("demo"),
            "erni-postgres"
        );
        let build = b.build.as_ref().unwrap();
        assert_eq!(b.image, build.image);
        assert!(b.image.starts_with("stackwarden-build/demo-backend:"));
        assert_eq!(build.also_tag, None);
        assert!(!format!("{p:?}").contains("from-env-file"));
    }

    #[test]
    fn a_changed_env_file_or_context_changes_the_config_hash() {
        let hash = |env: &str, digest: &str| {
            let inputs = local(
                &[("/m/.env", Ok(env)), ("/etc/erni/extra.env", Ok(""))],
                &[("/m/./backend", digest)],
            );
            load_local(&stack(RUNBOOK, &[]), &inputs)
                .unwrap()
                .service("backend")
                .unwrap()
                .config_hash()
        };
        assert_eq!(hash("X=1", "d1"), hash("X=1", "d1"));
        assert_ne!(hash("X=1", "d1"), hash("X=2", "d1"));
        assert_ne!(hash("X=1", "d1"), hash("X=1", "d2"));
        assert!(!hash("X=secret-value", "d1").contains("secret-value"));
    }

    #[test]
    fn a_missing_env_file_is_named_and_env_values_stay_out_of_errors() {
        let inputs = local(
            &[
                ("/m/.env", Err("No such file or directory (os error 2)")),
                ("/etc/erni/extra.env", Ok("")),
            ],
            &[("/m/./backend", "d")],
        );
        let err = load_local(&stack(RUNBOOK, &[]), &inputs).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidField);
        assert!(err.message.contains("/m/.env"), "{}", err.message);

        let file = "services: {a: {image: x, env_file: .env, command: \"${NOPE}\"}}";
        let inputs = local(&[("/m/.env", Ok("PW=s3cret-in-file"))], &[]);
        let mut s = stack(file, &[]);
        s.spec.compose.file = file.replace("${NOPE}", "s3cret-in-file ${NOPE}");
        let err = load_local(&s, &inputs).unwrap_err();
        assert!(!err.message.contains("s3cret-in-file"), "{}", err.message);
    }

    #[test]
    fn in_a_cluster_env_file_and_build_say_what_to_use_instead_and_container_name_works() {
        let err = load(&stack("services: {a: {image: x, env_file: .env}}", &[])).unwrap_err();
        assert_eq!(err.reason, Reason::UnsupportedComposeKey);
        assert!(err.message.contains("variablesFrom"), "{}", err.message);
        let err = load(&stack("services: {a: {build: .}}", &[])).unwrap_err();
        assert!(err.message.contains("push"), "{}", err.message);
        let p = load(&stack(
            "services: {a: {image: x, container_name: erni-a}}",
            &[],
        ))
        .unwrap();
        assert_eq!(p.services[0].container_name("demo"), "erni-a");
    }

    #[test]
    fn two_services_with_one_container_name_are_refused() {
        let err = load(&stack(
            "services: {a: {image: x, container_name: same}, b: {image: x, container_name: same}}",
            &[],
        ))
        .unwrap_err();
        assert!(err.message.contains("\"same\""), "{}", err.message);
    }

    #[test]
    fn a_build_with_an_image_is_also_tagged_as_that_image() {
        let inputs = local(&[], &[("/m/.", "d")]);
        let p = load_local(
            &stack("services: {a: {image: erni/backend:v2, build: .}}", &[]),
            &inputs,
        )
        .unwrap();
        let a = &p.services[0];
        assert!(a.image.starts_with("stackwarden-build/demo-a:"));
        assert_eq!(
            a.build.as_ref().unwrap().also_tag.as_deref(),
            Some("erni/backend:v2")
        );
    }

    #[test]
    fn existing_services_keep_their_config_hash() {
        // Containers created before these keys existed must not all be recreated on upgrade.
        let p = load(&stack("services: {a: {image: x}}", &[])).unwrap();
        let json = serde_json::to_string(&p.services[0]).unwrap();
        assert!(
            !json.contains("fixed_name") && !json.contains("build"),
            "{json}"
        );
    }
}
