//! The CRD as clusters see it: the committed files must be exactly what `stackwarden crd`
//! prints, and what it prints must get past both `kubectl apply`'s client-side validation and
//! the API server's CRD validation. Regenerate the files with:
//! `cargo run -p stackwarden -- crd > crds/servicestack.yaml && charts/stackwarden/sync-crd.sh`

use serde_json::Value;

#[test]
fn committed_crd_matches_generated() {
    let generated = stackwarden::api::crd_yaml();
    for path in [
        "../crds/servicestack.yaml",
        "../charts/stackwarden/crds/servicestack.yaml",
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let committed =
            std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
        assert!(
            committed == generated,
            "{path} differs from `stackwarden crd`; regenerate it (see the comment at the top of this test)"
        );
    }
}

/// Walks the generated CRD for what is refused before any ServiceStack exists:
///
/// - kubectl's client-side validation (`kubectl apply` against servers without server-side
///   field validation, i.e. below 1.25; k8s.io/kube-openapi `pkg/util/proto/validation`) types
///   every value of the manifest, and a JSON `null` has no type: `unknown object type "nil"`,
///   e.g. in an `enum`. It also refuses fields that JSONSchemaProps does not have.
/// - The API server's CRD validation (apiextensions-apiserver
///   `pkg/apis/apiextensions/validation`): `$ref`, `id`, `definitions`, `patternProperties`,
///   `dependencies`, `additionalItems` are not supported; `uniqueItems: true` is forbidden;
///   `additionalProperties` and `properties` are mutually exclusive; `type: null` is
///   forbidden; `nullable` cannot be true at the root; `default` must not be set in the
///   top-level `apiVersion`, `kind` and `metadata`, and must validate against its schema.
/// - The structural-schema rules ("Specifying a structural schema",
///   <https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>):
///   1. the root, every field (`properties`, `additionalProperties`) and every array item
///      (`items`) specifies a non-empty `type`, except with `x-kubernetes-int-or-string: true`
///      or `x-kubernetes-preserve-unknown-fields: true`;
///   2. every field and item specified inside `allOf`, `anyOf`, `oneOf` or `not` is also
///      specified outside of them;
///   3. `description`, `type`, `default`, `additionalProperties` and `nullable` are not set
///      inside `allOf`, `anyOf`, `oneOf` or `not`;
///   4. a `metadata` schema restricts only `metadata.name` and `metadata.generateName`;
///
///   and `additionalProperties: false` is not allowed (unknown fields are pruned instead).
#[test]
fn crd_passes_kubectl_and_api_server_validation() {
    let crd: Value = yaml_serde::from_str(&stackwarden::api::crd_yaml()).unwrap();
    let problems = lint_crd(&crd);
    assert!(
        problems.is_empty(),
        "the CRD would be refused:\n{}",
        problems.join("\n")
    );
}

/// The checker itself must see what it claims to: one broken node per rule.
#[test]
fn the_crd_check_finds_each_kind_of_problem() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "kind": {"type": "string", "default": "X"},
            "health": {"type": "string", "nullable": true, "enum": ["Healthy", null]},
            "port": {"type": "integer", "enum": ["80"]},
            "untyped": {"description": "no type"},
            "nullableOnly": {"nullable": true},
            "ref": {"$ref": "#/definitions/x", "type": "object"},
            "closed": {"type": "object", "additionalProperties": false},
            "both": {"type": "object", "properties": {"a": {"type": "string"}},
                     "additionalProperties": {"type": "string"}},
            "set": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
            "choice": {"type": "object", "properties": {"a": {"type": "string"}},
                       "oneOf": [{"required": ["a"], "description": "in a junctor"},
                                 {"properties": {"b": {"type": "string"}}}]},
            "count": {"type": "integer", "default": "three"},
            "odd": {"type": "string", "examples": ["x"]}
        }
    });
    let problems = lint_schema(&bad);
    let expected = [
        "metadata: restricts metadata.labels",
        "kind: default must not be set",
        "health.enum[1]: null",
        "port.enum[0]: \"80\" is not a integer",
        "untyped: no type",
        "nullableOnly: nullable without type",
        "ref: $ref is not supported",
        "closed: additionalProperties: false",
        "both: additionalProperties and properties",
        "set: uniqueItems: true",
        "choice.oneOf[0]: description inside",
        "choice.oneOf[1]: field b is not specified outside",
        "count.default: \"three\" is not a integer",
        "odd: unknown field examples",
    ];
    for e in expected {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "missed {e:?}; found:\n{}",
            problems.join("\n")
        );
    }
}

fn lint_crd(crd: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    // The schemas are searched by lint_schema.
    let mut rest = crd.clone();
    for version in rest["spec"]["versions"].as_array_mut().unwrap() {
        version.as_object_mut().unwrap().remove("schema");
    }
    find_nulls("crd", &rest, &mut problems);
    for (i, version) in crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let schema = &version["schema"]["openAPIV3Schema"];
        problems.extend(
            lint_schema(schema)
                .into_iter()
                .map(|p| format!("versions[{i}].{p}")),
        );
    }
    problems
}

/// kubectl's client-side validation cannot type a `null`, wherever it is.
fn find_nulls(path: &str, v: &Value, problems: &mut Vec<String>) {
    match v {
        Value::Null => problems.push(format!(
            "{path}: null (kubectl: unknown object type \"nil\")"
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_nulls(&format!("{path}[{i}]"), item, problems);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                find_nulls(&format!("{path}.{k}"), item, problems);
            }
        }
        _ => {}
    }
}

fn lint_schema(root: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    find_nulls("openAPIV3Schema", root, &mut problems);
    if root.get("nullable") == Some(&Value::Bool(true)) {
        problems.push("openAPIV3Schema: nullable cannot be true at the root".into());
    }
    let mut lint = Lint {
        problems,
        junctor: false,
        defaults_forbidden: false,
    };
    lint.node("openAPIV3Schema", root);
    if let Some(props) = root.get("properties").and_then(Value::as_object) {
        if let Some(meta) = props.get("metadata") {
            lint.metadata(meta);
        }
        // The root's own walk checked these as fields; defaults are refused in them on top.
        for field in ["apiVersion", "kind", "metadata"] {
            if let Some(schema) = props.get(field) {
                let mut meta = Lint {
                    problems: Vec::new(),
                    junctor: false,
                    defaults_forbidden: true,
                };
                meta.node(field, schema);
                lint.problems.extend(
                    meta.problems
                        .into_iter()
                        .filter(|p| p.contains("default must not be set")),
                );
            }
        }
    }
    lint.problems
}

/// Every field of JSONSchemaProps (apiextensions.k8s.io/v1); kubectl refuses any other.
const KNOWN: &[&str] = &[
    "id",
    "$schema",
    "$ref",
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "patternProperties",
    "dependencies",
    "additionalItems",
    "definitions",
    "externalDocs",
    "example",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

/// Known to JSONSchemaProps but refused in a CRD by the API server.
const UNSUPPORTED: &[&str] = &[
    "$ref",
    "id",
    "definitions",
    "patternProperties",
    "dependencies",
    "additionalItems",
];

/// Set inside a logical junctor, these make a schema non-structural (rule 3).
const NOT_IN_JUNCTORS: &[&str] = &[
    "description",
    "type",
    "default",
    "additionalProperties",
    "nullable",
];

struct Lint {
    problems: Vec<String>,
    /// Inside `allOf`/`anyOf`/`oneOf`/`not`.
    junctor: bool,
    defaults_forbidden: bool,
}

impl Lint {
    fn report(&mut self, path: &str, what: impl std::fmt::Display) {
        self.problems.push(format!("{path}: {what}"));
    }

    /// One schema node, then everything below it.
    fn node(&mut self, path: &str, s: &Value) {
        let Some(map) = s.as_object() else {
            return self.report(path, "a schema must be an object");
        };
        for key in map.keys() {
            if !KNOWN.contains(&key.as_str()) {
                self.report(
                    path,
                    format!("unknown field {key} (not in JSONSchemaProps)"),
                );
            } else if UNSUPPORTED.contains(&key.as_str()) {
                self.report(path, format!("{key} is not supported in a CRD"));
            }
        }
        if self.junctor {
            for key in NOT_IN_JUNCTORS {
                if map.contains_key(*key) {
                    self.report(path, format!("{key} inside allOf/anyOf/oneOf/not"));
                }
            }
        } else {
            self.needs_type(path, s);
        }
        self.values(path, s);
        self.shape(path, s);
        self.children(path, s);
    }

    /// Structural rule 1.
    fn needs_type(&mut self, path: &str, s: &Value) {
        let exempt = [
            "x-kubernetes-int-or-string",
            "x-kubernetes-preserve-unknown-fields",
        ]
        .iter()
        .any(|k| s.get(*k) == Some(&Value::Bool(true)));
        match s.get("type").and_then(Value::as_str) {
            Some("null") => self.report(path, "type: null is forbidden, use nullable"),
            Some("") | None if !exempt => {
                if s.get("nullable").is_some() {
                    self.report(path, "nullable without type");
                } else {
                    self.report(path, "no type");
                }
            }
            _ => {}
        }
    }

    /// `enum` and `default` hold values of the node's type.
    fn values(&mut self, path: &str, s: &Value) {
        let ty = s.get("type").and_then(Value::as_str);
        if let Some(values) = s.get("enum") {
            match values.as_array() {
                Some(values) => {
                    for (i, v) in values.iter().enumerate() {
                        self.typed(&format!("{path}.enum[{i}]"), v, ty);
                    }
                }
                None => self.report(path, "enum must be a list"),
            }
        }
        if let Some(default) = s.get("default") {
            if self.defaults_forbidden {
                self.report(
                    path,
                    "default must not be set in the top-level apiVersion, kind, metadata",
                );
            }
            self.typed(&format!("{path}.default"), default, ty);
            if let Some(values) = s.get("enum").and_then(Value::as_array) {
                if !values.contains(default) {
                    self.report(path, "default is not one of enum");
                }
            }
        }
    }

    fn typed(&mut self, path: &str, v: &Value, ty: Option<&str>) {
        let ok = match (ty, v) {
            // find_nulls reports it.
            (_, Value::Null) => true,
            (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
            (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Some("number"), Value::Number(_)) => true,
            (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
            (None, _) => true,
            _ => false,
        };
        if !ok {
            self.report(path, format!("{v} is not a {}", ty.unwrap_or_default()));
        }
    }

    /// Keyword combinations the API server refuses.
    fn shape(&mut self, path: &str, s: &Value) {
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                self.report(path, "additionalProperties: false is forbidden")
            }
            Some(_) if s.get("properties").is_some() => self.report(
                path,
                "additionalProperties and properties are mutually exclusive",
            ),
            _ => {}
        }
        if s.get("uniqueItems") == Some(&Value::Bool(true)) {
            self.report(path, "uniqueItems: true is forbidden");
        }
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
            self.report(
                path,
                "x-kubernetes-preserve-unknown-fields must be true or unset",
            );
        }
        if s.get("items").is_some_and(Value::is_array) {
            self.report(path, "items must be a schema, not a list");
        }
    }

    fn children(&mut self, path: &str, s: &Value) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                self.node(&format!("{path}.{name}"), sub);
            }
        }
        if let Some(sub) = s.get("items").filter(|i| i.is_object()) {
            self.node(&format!("{path}[]"), sub);
        }
        if let Some(sub) = s.get("additionalProperties").filter(|a| a.is_object()) {
            self.node(&format!("{path}.*"), sub);
        }
        let branches = ["allOf", "anyOf", "oneOf"]
            .iter()
            .flat_map(|k| {
                let list = s.get(*k).and_then(Value::as_array).into_iter().flatten();
                list.enumerate().map(move |(i, b)| (format!("{k}[{i}]"), b))
            })
            .chain(s.get("not").map(|b| ("not".to_owned(), b)));
        for (name, branch) in branches.collect::<Vec<_>>() {
            let here = format!("{path}.{name}");
            self.outside(&here, s, branch);
            let outer = std::mem::replace(&mut self.junctor, true);
            self.node(&here, branch);
            self.junctor = outer;
        }
    }

    /// Structural rule 2: what a junctor branch specifies, its node specifies too.
    fn outside(&mut self, path: &str, node: &Value, branch: &Value) {
        let own = node.get("properties").and_then(Value::as_object);
        if let Some(props) = branch.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                if !own.is_some_and(|o| o.contains_key(name)) {
                    self.report(
                        path,
                        format!("field {name} is not specified outside the junctor"),
                    );
                }
            }
        }
        if branch.get("items").is_some() && node.get("items").is_none() {
            self.report(path, "items are not specified outside the junctor");
        }
    }

    /// Structural rule 4.
    fn metadata(&mut self, meta: &Value) {
        if let Some(props) = meta.get("properties").and_then(Value::as_object) {
            for name in props.keys() {
                if name != "name" && name != "generateName" {
                    self.report("metadata", format!("restricts metadata.{name}"));
                }
            }
        }
    }
}
