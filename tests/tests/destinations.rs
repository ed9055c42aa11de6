//! The backup destinations against real storage: a directory (and a full tmpfs) and an S3 API
//! (moto's server).

use std::path::Path;
use std::process::Command;

use stackwarden::backup::destination::local::LocalDir;
use stackwarden::backup::destination::s3::{S3Config, S3};
use stackwarden::backup::destination::{Destination, DestinationError, ObjectInfo};
use stackwarden_tests::s3::{Moto, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use tokio::io::AsyncReadExt;

const MIB: usize = 1024 * 1024;

/// Bytes that differ from chunk to chunk, so a lost or reordered chunk shows.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn upload(dest: &dyn Destination, name: &str, bytes: &[u8], chunk: usize) {
    let mut up = dest.create(name).await.expect("create");
    for c in bytes.chunks(chunk) {
        up.write(c.to_vec().into()).await.expect("write");
    }
    up.commit().await.expect("commit");
}

async fn read_all(dest: &dyn Destination, name: &str) -> Vec<u8> {
    let mut reader = dest.open(name).await.expect("open");
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.expect("read");
    out
}

fn names(list: &[ObjectInfo]) -> Vec<&str> {
    list.iter().map(|o| o.name.as_str()).collect()
}

/// 20 MiB in 1 MiB chunks (several S3 parts), listed with its size and streamed back intact.
async fn check_big_roundtrip(dest: &dyn Destination) {
    let bytes = data(20 * MIB, 1);
    upload(dest, "2025-01-01T00-00-00Z.sql.zst", &bytes, MIB).await;
    assert_eq!(
        dest.list().await.unwrap(),
        vec![ObjectInfo {
            name: "2025-01-01T00-00-00Z.sql.zst".into(),
            size: bytes.len() as u64,
        }]
    );
    let back = read_all(dest, "2025-01-01T00-00-00Z.sql.zst").await;
    assert_eq!(back.len(), bytes.len());
    assert!(
        back == bytes,
        "the bytes read back differ from the bytes written"
    );
}

async fn check_abort(dest: &dyn Destination) {
    let mut up = dest.create("aborted.sql.zst").await.unwrap();
    for c in data(12 * MIB, 2).chunks(MIB) {
        up.write(c.to_vec().into()).await.unwrap();
    }
    up.abort().await.expect("abort");
    assert!(
        !names(&dest.list().await.unwrap()).contains(&"aborted.sql.zst"),
        "an aborted upload is listed"
    );
    assert!(matches!(
        dest.get_small("aborted.sql.zst").await,
        Err(DestinationError::NotFound(_))
    ));
}

async fn check_small_and_delete(dest: &dyn Destination) {
    let manifest = br#"{"name":"x"}"#;
    dest.put_small("x.manifest.json", manifest.to_vec().into())
        .await
        .unwrap();
    assert_eq!(
        &dest.get_small("x.manifest.json").await.unwrap()[..],
        manifest
    );
    // Overwriting replaces the whole object.
    dest.put_small("x.manifest.json", b"{}".to_vec().into())
        .await
        .unwrap();
    assert_eq!(&dest.get_small("x.manifest.json").await.unwrap()[..], b"{}");

    dest.delete("x.manifest.json").await.unwrap();
    match dest.get_small("x.manifest.json").await {
        Err(DestinationError::NotFound(what)) => {
            assert!(what.contains("x.manifest.json"), "{what}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        dest.open("x.manifest.json").await.err(),
        Some(DestinationError::NotFound(_))
    ));
    // Deleting what is not there is not an error (retention may race with a manual cleanup).
    dest.delete("x.manifest.json").await.unwrap();
    assert!(dest.list().await.unwrap().is_empty());
}

/// An upload in progress (a temp file, an unfinished multipart upload) is not listed, and
/// appears whole at commit.
async fn check_list_hides_partial(dest: &dyn Destination) {
    dest.put_small("a.manifest.json", b"{}".to_vec().into())
        .await
        .unwrap();
    let bytes = data(10 * MIB, 3);
    let mut up = dest.create("b.sql.zst").await.unwrap();
    for c in bytes.chunks(MIB) {
        up.write(c.to_vec().into()).await.unwrap();
    }
    assert_eq!(names(&dest.list().await.unwrap()), ["a.manifest.json"]);
    assert!(matches!(
        dest.get_small("b.sql.zst").await,
        Err(DestinationError::NotFound(_))
    ));
    up.commit().await.unwrap();
    let list = dest.list().await.unwrap();
    assert_eq!(names(&list), ["a.manifest.json", "b.sql.zst"]);
    assert_eq!(list[1].size, bytes.len() as u64);
}

fn hidden_and_all(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

// --- local directory -------------------------------------------------------------------------

fn local() -> (tempfile::TempDir, LocalDir) {
    let tmp = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: the first write creates it.
    let dest = LocalDir::new(tmp.path().join("default/demo/pg"));
    (tmp, dest)
}

#[tokio::test]
async fn local_big_upload_lists_and_streams_back() {
    let (tmp, dest) = local();
    assert!(dest.list().await.unwrap().is_empty());
    check_big_roundtrip(&dest).await;
    let dir = tmp.path().join("default/demo/pg");
    assert_eq!(hidden_and_all(&dir), ["2025-01-01T00-00-00Z.sql.zst"]);
    assert_eq!(
        dest.location("x"),
        dir.join("x").to_str().unwrap(),
        "the location is the absolute path"
    );
}

#[tokio::test]
async fn local_aborted_upload_leaves_nothing() {
    let (tmp, dest) = local();
    check_abort(&dest).await;
    assert!(hidden_and_all(&tmp.path().join("default/demo/pg")).is_empty());
}

#[tokio::test]
async fn local_dropped_upload_leaves_nothing() {
    let (tmp, dest) = local();
    let mut up = dest.create("dropped").await.unwrap();
    up.write(data(MIB, 4).into()).await.unwrap();
    drop(up);
    assert!(hidden_and_all(&tmp.path().join("default/demo/pg")).is_empty());
}

#[tokio::test]
async fn local_small_objects_and_delete() {
    let (_tmp, dest) = local();
    check_small_and_delete(&dest).await;
}

#[tokio::test]
async fn local_list_hides_partial_and_clean_partial_removes_it() {
    let (tmp, dest) = local();
    check_list_hides_partial(&dest).await;
    // What a crash leaves behind.
    let dir = tmp.path().join("default/demo/pg");
    std::fs::write(dir.join(".c.sql.zst.partial"), b"half").unwrap();
    assert_eq!(
        names(&dest.list().await.unwrap()),
        ["a.manifest.json", "b.sql.zst"]
    );
    dest.clean_partial().await.unwrap();
    assert_eq!(hidden_and_all(&dir), ["a.manifest.json", "b.sql.zst"]);
}

#[tokio::test]
async fn local_rejects_names_outside_the_directory() {
    let (_tmp, dest) = local();
    for name in ["../escape", ".hidden", "a/b", ""] {
        assert!(
            matches!(
                dest.create(name).await.err(),
                Some(DestinationError::Failed(_))
            ),
            "{name:?}"
        );
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (this test needs root to fill a small filesystem): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn local_full_disk_is_full_and_leaves_nothing_behind() {
    let fs = Tmpfs::mount("1m");
    let dir = fs.dir.path().join("pg");
    let dest = LocalDir::new(dir.clone());
    dest.put_small("old.manifest.json", b"{\"kept\":true}".to_vec().into())
        .await
        .unwrap();

    let bytes = data(4 * MIB, 5);
    let mut up = dest.create("big.sql.zst").await.unwrap();
    let mut result = Ok(());
    for c in bytes.chunks(64 * 1024) {
        result = up.write(c.to_vec().into()).await;
        if result.is_err() {
            break;
        }
    }
    // tokio writes in the background: the error may only show at the flush in commit.
    let err = match result {
        Err(e) => {
            drop(up);
            e
        }
        Ok(()) => up.commit().await.expect_err("4 MiB fit on a 1 MiB tmpfs"),
    };
    match &err {
        DestinationError::Full(msg) => {
            assert!(msg.contains(dir.to_str().unwrap()), "{msg}");
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(hidden_and_all(&dir), ["old.manifest.json"]);
    assert_eq!(
        &dest.get_small("old.manifest.json").await.unwrap()[..],
        b"{\"kept\":true}"
    );
    // The space is back: a small write works again.
    dest.put_small("new.manifest.json", b"{}".to_vec().into())
        .await
        .unwrap();
}

// --- S3 (moto) -------------------------------------------------------------------------------

fn s3(moto: &Moto, prefix: &str) -> S3 {
    S3::new(S3Config {
        bucket: moto.bucket().to_owned(),
        prefix: prefix.to_owned(),
        endpoint: Some(moto.endpoint()),
        region: None,
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
    })
    .expect("S3 config")
}

#[tokio::test]
async fn s3_big_upload_lists_and_streams_back() {
    let moto = Moto::start().unwrap();
    let dest = s3(&moto, "backups/default/demo/pg");
    assert!(dest.list().await.unwrap().is_empty());
    check_big_roundtrip(&dest).await;
    assert_eq!(
        dest.location("x"),
        format!("s3://{}/backups/default/demo/pg/x", moto.bucket())
    );
}

#[tokio::test]
async fn s3_aborted_upload_is_not_listed_nor_kept() {
    let moto = Moto::start().unwrap();
    check_abort(&s3(&moto, "backups/default/demo/pg")).await;
    assert_eq!(moto.unfinished_uploads().unwrap(), 0);
}

/// A cancelled backup task drops its upload; the upload is aborted in the background.
#[tokio::test]
async fn s3_dropped_upload_is_aborted() {
    let moto = Moto::start().unwrap();
    let dest = s3(&moto, "backups/default/demo/pg");
    let mut up = dest.create("dropped").await.unwrap();
    for c in data(10 * MIB, 6).chunks(MIB) {
        up.write(c.to_vec().into()).await.unwrap();
    }
    assert_eq!(moto.unfinished_uploads().unwrap(), 1);
    drop(up);
    let start = std::time::Instant::now();
    while moto.unfinished_uploads().unwrap() != 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the dropped upload was not aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(dest.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn s3_small_objects_and_delete() {
    let moto = Moto::start().unwrap();
    check_small_and_delete(&s3(&moto, "backups/default/demo/pg")).await;
    // An empty prefix is the bucket's root.
    let root = s3(&moto, "");
    assert_eq!(root.location("x"), format!("s3://{}/x", moto.bucket()));
    check_small_and_delete(&root).await;
}

#[tokio::test]
async fn s3_list_hides_partial() {
    let moto = Moto::start().unwrap();
    check_list_hides_partial(&s3(&moto, "backups/default/demo/pg")).await;
}

/// A target sees its own objects only: not those of a target whose prefix extends its own,
/// nor of one whose prefix merely starts with the same characters.
#[tokio::test]
async fn s3_list_is_one_level_of_one_prefix() {
    let moto = Moto::start().unwrap();
    let pg = s3(&moto, "backups/default/demo/pg");
    for (prefix, name) in [
        ("backups/default/demo/pg", "mine"),
        ("backups/default/demo/pg/nested", "deeper"),
        ("backups/default/demo/pg2", "sibling"),
        ("backups/default/demo", "parent"),
    ] {
        s3(&moto, prefix)
            .put_small(name, b"x".to_vec().into())
            .await
            .unwrap();
    }
    assert_eq!(
        pg.list().await.unwrap(),
        vec![ObjectInfo {
            name: "mine".into(),
            size: 1
        }]
    );
    // A trailing slash in the configured prefix means the same prefix.
    assert_eq!(
        names(&s3(&moto, "backups/default/demo/pg/").list().await.unwrap()),
        ["mine"]
    );
}

#[tokio::test]
async fn s3_unreachable_endpoint_fails_without_the_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";
    let cfg = S3Config {
        bucket: "nowhere".into(),
        prefix: "backups/default/demo/pg".into(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("eu-west-1".into()),
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: secret.into(),
    };
    assert!(!format!("{cfg:?}").contains(secret), "{cfg:?}");
    let dest = S3::new(cfg).unwrap();
    assert!(!format!("{dest:?}").contains(secret));

    let errors = [
        dest.list().await.err(),
        dest.put_small("m.json", b"{}".to_vec().into()).await.err(),
        dest.get_small("m.json").await.err(),
        dest.create("b.sql.zst").await.err(),
    ];
    for err in errors {
        let err = err.expect("a call to a closed port fails");
        let text = err.to_string();
        assert!(matches!(err, DestinationError::Failed(_)), "{err:?}");
        assert!(!text.contains(secret), "the secret leaked: {text}");
        assert!(
            !format!("{err:?}").contains(secret),
            "the secret leaked: {err:?}"
        );
        assert!(
            text.contains("s3://nowhere/backups/default/demo/pg"),
            "{text}"
        );
        assert!(text.contains("check the endpoint"), "{text}");
    }
}

#[tokio::test]
async fn s3_wrong_credentials_fail_without_the_secret() {
    let moto = Moto::start_with_auth().unwrap();
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";
    let dest = S3::new(S3Config {
        bucket: moto.bucket().to_owned(),
        prefix: "backups/default/demo/pg".into(),
        endpoint: Some(moto.endpoint()),
        region: None,
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: secret.into(),
    })
    .unwrap();
    let errors = [
        dest.list().await.err(),
        dest.put_small("m.json", b"{}".to_vec().into()).await.err(),
        dest.create("b.sql.zst").await.err(),
    ];
    for err in errors {
        let err = err.expect("a call with unknown credentials fails");
        let text = err.to_string();
        assert!(matches!(err, DestinationError::Failed(_)), "{err:?}");
        assert!(!text.contains(secret), "the secret leaked: {text}");
        assert!(text.contains("check the access key"), "{text}");
    }
}

#[tokio::test]
async fn s3_missing_bucket_is_not_a_missing_object() {
    let moto = Moto::start().unwrap();
    let dest = S3::new(S3Config {
        bucket: "no-such-bucket".into(),
        prefix: "backups/default/demo/pg".into(),
        endpoint: Some(moto.endpoint()),
        region: None,
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET_ACCESS_KEY.into(),
    })
    .unwrap();
    for err in [
        dest.list().await.err(),
        dest.get_small("m.json").await.err(),
        dest.put_small("m.json", b"{}".to_vec().into()).await.err(),
    ] {
        let err = err.expect("a call to a missing bucket fails");
        match err {
            DestinationError::Failed(msg) => {
                assert!(msg.contains("the bucket does not exist"), "{msg}")
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
