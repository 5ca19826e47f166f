//! The fsmount core driven directly, without FUSE, against a real fsserver: what the fuser
//! adapter relies on, checked where a mount could hide it (inode numbers, lookup counts,
//! pagination, errno values).

use bytes::Bytes;
use e2e_tests::Server;
use fsmount::client;
use fsmount::fs::inodes::ROOT;
use fsmount::fs::{Fh, Fs, FsOptions, Ino};

/// TLS as fsmount mounts by default (the certificate checked through the token proof).
fn tls() -> client::transport::Transport {
    client::transport::Transport::tls("127.0.0.1", &client::transport::Verify::ByToken).unwrap()
}

async fn core(server: &Server) -> std::sync::Arc<Fs> {
    let s = client::connect(&server.addr, "data", &server.token(), tls())
        .await
        .unwrap();
    std::sync::Arc::new(Fs::new(
        std::sync::Arc::new(s.client),
        &s.root,
        1 << 20,
        FsOptions::default(),
    ))
}

/// A runtime whose `block_on` runs the future as root's requests (as a FUSE operation of a
/// root process would be): the test servers trust root (`--no-root-squash`).
struct AsRoot(tokio::runtime::Runtime);

impl AsRoot {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        let root = proto::Credentials::default();
        self.0.block_on(fsmount::credentials::CALLER.scope(root, f))
    }
}

fn rt() -> AsRoot {
    AsRoot(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    )
}

#[test]
fn create_write_read_rename_and_remove_through_the_core() {
    let server = Server::start(&[]);
    rt().block_on(async {
        let fs = core(&server).await;
        let dir = fs.mkdir(ROOT, b"d", 0o755).await.unwrap();
        let (file, fh) = fs
            .create(dir.ino, b"f", 0o644, libc::O_WRONLY as u32)
            .await
            .unwrap();
        // More than one request's worth, so the core splits it.
        let data = Bytes::from(
            (0..(3 << 20) / 4)
                .flat_map(|i: u32| i.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        assert_eq!(
            fs.write(fh, 0, data.clone()).await.unwrap() as usize,
            data.len()
        );
        fs.release(file.ino, fh).await.unwrap();

        let opened = fs.open(file.ino, libc::O_RDONLY as u32).await.unwrap();
        let mut back = Vec::new();
        loop {
            let chunk = fs
                .read(file.ino, opened.fh, back.len() as u64, 1 << 20)
                .await
                .unwrap();
            if chunk.is_empty() {
                break;
            }
            back.extend_from_slice(&chunk);
        }
        assert_eq!(back, data);

        // Renaming the directory moves the file's path with it.
        fs.rename(ROOT, b"d", ROOT, b"e", 0).await.unwrap();
        let attr = fs.getattr(file.ino, None).await.unwrap();
        assert_eq!(attr.size, data.len() as u64);
        // The open handle still works after the rename.
        assert_eq!(
            fs.read(file.ino, opened.fh, 0, 4).await.unwrap(),
            data.slice(0..4)
        );
        fs.release(file.ino, opened.fh).await.unwrap();
        assert!(server.export("data").join("e/f").exists());

        fs.remove(dir.ino, b"f", false).await.unwrap();
        let gone = fs.lookup(dir.ino, b"f").await.unwrap_err();
        assert_eq!(gone.errno(), libc::ENOENT);
        let not_empty = fs.mkdir(dir.ino, b"x", 0o755).await.map(|_| ());
        assert!(not_empty.is_ok());
        assert_eq!(
            fs.remove(ROOT, b"e", true).await.unwrap_err().errno(),
            libc::ENOTEMPTY
        );
    });
}

#[test]
fn listing_spans_pages_and_counts_lookups_only_for_accepted_entries() {
    let server = Server::start(&[]);
    let export = server.export("data");
    for i in 0..2500 {
        std::fs::write(export.join(format!("n{i}")), "").unwrap();
    }
    rt().block_on(async {
        let fs = core(&server).await;
        let fh = fs.opendir(ROOT).unwrap();
        let mut names = Vec::new();
        let mut offset = 0;
        // Take 100 items per call, as a small kernel buffer would.
        loop {
            let mut taken = 0;
            let before = names.len();
            fs.readdir(fh, offset, true, |item| {
                if taken == 100 {
                    return true;
                }
                taken += 1;
                offset = item.offset;
                names.push(String::from_utf8(item.name.to_vec()).unwrap());
                false
            })
            .await
            .unwrap();
            if names.len() == before {
                break;
            }
        }
        fs.releasedir(fh);
        assert_eq!(&names[..2], &[".", ".."]);
        let mut rest: Vec<_> = names[2..].to_vec();
        rest.sort();
        let mut want: Vec<_> = (0..2500).map(|i| format!("n{i}")).collect();
        want.sort();
        assert_eq!(rest, want);
        // One inode per accepted entry plus the root; refused entries were not counted.
        assert_eq!(fs.known_inodes(), 2501);
    });
}

#[test]
fn hard_links_are_one_inode_in_the_core() {
    let server = Server::start(&[]);
    std::fs::write(server.export("data").join("a"), "x").unwrap();
    rt().block_on(async {
        let fs = core(&server).await;
        let a = fs.lookup(ROOT, b"a").await.unwrap();
        let b = fs.link(a.ino, ROOT, b"b").await.unwrap();
        assert_eq!(a.ino, b.ino);
        assert_eq!(b.attr.nlink, 2);
        let again = fs.lookup(ROOT, b"b").await.unwrap();
        assert_eq!(again.ino, a.ino);
    });
}

/// Reads all of `ino` through `fh` in reads of `chunk` bytes starting at `offset`.
async fn read_all(fs: &Fs, ino: Ino, fh: Fh, mut offset: u64, chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = fs.read(ino, fh, offset, chunk).await.unwrap();
        if got.is_empty() {
            return out;
        }
        offset += got.len() as u64;
        out.extend_from_slice(&got);
    }
}

#[test]
fn block_cache_serves_reads_across_blocks_and_never_stale_data() {
    let server = Server::start(&[]);
    let path = server.export("data").join("f");
    let original: Vec<u8> = (0..(5 << 20) + 4321u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &original).unwrap();
    rt().block_on(async {
        let options = FsOptions {
            cache_size: 3 << 20,
            readahead: 2 << 20,
            ..FsOptions::default()
        };
        let s = client::connect(&server.addr, "data", &server.token(), tls())
            .await
            .unwrap();
        let fs = std::sync::Arc::new(Fs::new(
            std::sync::Arc::new(s.client),
            &s.root,
            1 << 20,
            options,
        ));
        let f = fs.lookup(ROOT, b"f").await.unwrap();
        let o = fs.open(f.ino, libc::O_RDWR as u32).await.unwrap();

        // Sequential reads that straddle block boundaries (768 KiB into 1 MiB blocks).
        let mut back = fs.read(f.ino, o.fh, 0, 768 << 10).await.unwrap().to_vec();
        back.extend(read_all(&fs, f.ino, o.fh, 768 << 10, 1 << 20).await);
        assert_eq!(back, original);
        let stats = fs.cache_stats().unwrap();
        assert!(stats.hits > 0, "read-ahead blocks were used: {stats:?}");
        assert!(
            stats.bytes <= 3 << 20,
            "cache stays in its bound: {stats:?}"
        );
        assert_eq!(stats.crc_failures, 0);

        // A random read the cache holds is served from it, one it does not is fetched.
        let tail = fs.read(f.ino, o.fh, (5 << 20) + 100, 4096).await.unwrap();
        assert_eq!(&tail[..], &original[(5 << 20) + 100..(5 << 20) + 4196]);
        let head = fs.read(f.ino, o.fh, 10, 100).await.unwrap();
        assert_eq!(&head[..], &original[10..110]);

        // A write through this mount is seen by the next read, cached blocks or not.
        fs.write(o.fh, (4 << 20) + 10, Bytes::from_static(b"written here"))
            .await
            .unwrap();
        let again = read_all(&fs, f.ino, o.fh, 0, 1 << 20).await;
        assert_eq!(&again[(4 << 20) + 10..(4 << 20) + 22], b"written here");
        fs.setattr(
            f.ino,
            Some(o.fh),
            fsmount::fs::SetAttr {
                size: Some(1 << 20),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(read_all(&fs, f.ino, o.fh, 0, 1 << 20).await.len(), 1 << 20);
        fs.release(f.ino, o.fh).await.unwrap();

        // A change made on the server is seen at the next open (close-to-open).
        let o = fs.open(f.ino, libc::O_RDONLY as u32).await.unwrap();
        assert_eq!(read_all(&fs, f.ino, o.fh, 0, 1 << 20).await.len(), 1 << 20);
        fs.release(f.ino, o.fh).await.unwrap();
        std::fs::write(&path, b"changed on the server").unwrap();
        let o = fs.open(f.ino, libc::O_RDONLY as u32).await.unwrap();
        assert_eq!(
            read_all(&fs, f.ino, o.fh, 0, 1 << 20).await,
            b"changed on the server"
        );
        fs.release(f.ino, o.fh).await.unwrap();
    });
}

#[test]
fn attributes_come_from_the_last_reply_until_this_mount_changes_the_file() {
    let server = Server::start(&[]);
    rt().block_on(async {
        let s = client::connect(&server.addr, "data", &server.token(), tls())
            .await
            .unwrap();
        let options = FsOptions {
            attr_ttl: std::time::Duration::from_secs(60),
            ..FsOptions::default()
        };
        let fs = std::sync::Arc::new(Fs::new(
            std::sync::Arc::new(s.client),
            &s.root,
            1 << 20,
            options,
        ));
        let (f, fh) = fs
            .create(ROOT, b"f", 0o644, libc::O_WRONLY as u32)
            .await
            .unwrap();
        fs.write(fh, 0, Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(fs.getattr(f.ino, None).await.unwrap().size, 5, "own write");

        // Changed behind the mount's back: the last reply stands for the attribute timeout.
        std::fs::write(server.export("data").join("f"), b"much longer").unwrap();
        assert_eq!(fs.getattr(f.ino, None).await.unwrap().size, 5);

        // Changes through the mount are seen at once.
        let change = fsmount::fs::SetAttr {
            size: Some(2),
            ..Default::default()
        };
        assert_eq!(fs.setattr(f.ino, Some(fh), change).await.unwrap().size, 2);
        assert_eq!(fs.getattr(f.ino, None).await.unwrap().size, 2);
        fs.link(f.ino, ROOT, b"g").await.unwrap();
        assert_eq!(fs.getattr(f.ino, None).await.unwrap().nlink, 2);
        fs.remove(ROOT, b"g", false).await.unwrap();
        assert_eq!(fs.getattr(f.ino, None).await.unwrap().nlink, 1);
        fs.release(f.ino, fh).await.unwrap();
    });
}
