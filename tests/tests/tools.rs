//! Real tools through the mount: rsync -aHAX, tar --xattrs, cp -a and git must behave as on
//! a local disk.

use std::path::Path;

use e2e_tests::{require_mount_support, sh, Mount, Server};

/// Builds the reference tree in `dir`: regular, empty and sparse files, symlinks (relative,
/// absolute, dangling), hard links, a fifo, xattrs and an ACL, every permission bit pattern,
/// nanosecond mtimes, numeric owners and odd names.
fn build_tree(dir: &Path) {
    sh(&format!(
        r#"
        S='{}'
        mkdir -p "$S/dir/sub" "$S/empty_dir" "$S/modes"
        printf 'hello\n' > "$S/regular"
        : > "$S/empty"
        truncate -s 8M "$S/sparse"
        printf 'middle' | dd of="$S/sparse" bs=1 seek=4194304 conv=notrunc status=none
        head -c 300000 /dev/urandom > "$S/dir/random"
        ln -s regular "$S/rel_link"
        ln -s /etc/hostname "$S/abs_link"
        ln -s nowhere/at/all "$S/dangling"
        ln "$S/regular" "$S/hard1"
        ln "$S/regular" "$S/dir/hard2"
        mkfifo "$S/fifo"
        setfattr -n user.color -v blue "$S/regular"
        setfattr -n user.bin -v 0xdeadbeef00ff "$S/dir/random"
        setfattr -n user.on_dir -v yes "$S/dir"
        setfattr -n trusted.secret -v root-only "$S/empty"
        setfacl -m u:1234:rwx,g:4321:r "$S/dir/random"
        setfacl -d -m u:1234:rx "$S/dir/sub"
        chown 1234:5678 "$S/dir/random"
        chown -h 2222:3333 "$S/rel_link"
        python3 -c 'import os, sys
for m in range(4096):
    p = os.path.join(sys.argv[1], "%04o" % m)
    open(p, "w").close()
    os.chmod(p, m)' "$S/modes"
        chmod 1777 "$S/empty_dir"
        chmod 2755 "$S/dir/sub"
        printf 'odd' > "$S/$(printf 'bad\xff\xfename')"
        printf 'nl' > "$S/$(printf 'new\nline')"
        printf 'long' > "$S/$(printf 'L%.0s' $(seq 255))"
        printf 'dash' > "$S/-dash"
        printf 'sp' > "$S/ lead space"
        touch -d '2001-02-03 04:05:06.123456789' "$S/regular"
        touch -d '1999-12-31 23:59:59.999999999' "$S/dir/random"
        touch -h -d '2010-10-10 10:10:10.101010101' "$S/rel_link"
        touch -d '2020-02-02 02:02:02.000000002' "$S/dir/sub" "$S/dir" "$S/empty_dir"
        "#,
        dir.display()
    ));
}

/// `rsync -aHAXn --itemize-changes` from `src` to `dst`: empty when they are the same.
fn rsync_differences(src: &Path, dst: &Path) -> String {
    sh(&format!(
        "rsync -aHAXn --numeric-ids --itemize-changes '{}/' '{}/'",
        src.display(),
        dst.display()
    ))
}

fn setup() -> (Server, Mount, tempfile::TempDir) {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let work = tempfile::tempdir().unwrap();
    build_tree(&work.path().join("src"));
    (server, mount, work)
}

#[test]
fn rsync_ahax_round_trips_with_no_differences() {
    let (server, mount, work) = setup();
    let src = work.path().join("src");
    let dst = mount.path.join("copy");
    sh(&format!(
        "rsync -aHAX --numeric-ids '{}/' '{}/'",
        src.display(),
        dst.display()
    ));
    assert_eq!(
        rsync_differences(&src, &dst),
        "",
        "rsync into the mount then compared"
    );
    // And the server's disk holds the same tree.
    assert_eq!(
        rsync_differences(&src, &server.export("data").join("copy")),
        ""
    );
    // And back out again.
    let back = work.path().join("back");
    sh(&format!(
        "rsync -aHAX --numeric-ids '{}/' '{}/'",
        dst.display(),
        back.display()
    ));
    assert_eq!(rsync_differences(&src, &back), "", "rsync out of the mount");
    // Spot checks of what sshfs gets wrong.
    let stat = sh(&format!(
        "stat -c '%h %i' '{0}/regular' '{0}/hard1' '{0}/dir/hard2'",
        dst.display()
    ));
    let lines: Vec<&str> = stat.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with("3 ")), "{stat}");
    assert!(lines.windows(2).all(|w| w[0] == w[1]), "one inode: {stat}");
    assert_eq!(
        sh(&format!("readlink '{}/abs_link'", dst.display())),
        "/etc/hostname\n"
    );
    assert_eq!(
        sh(&format!("stat -c %y '{}/regular'", dst.display())),
        "2001-02-03 04:05:06.123456789 +0000\n"
    );
    assert!(sh(&format!("getfacl -p '{}/dir/random'", dst.display())).contains("user:1234:rwx"));
}

#[test]
fn tar_with_xattrs_and_acls_round_trips() {
    let (_server, mount, work) = setup();
    let src = work.path().join("src");
    let dst = mount.path.join("untarred");
    sh(&format!(
        "mkdir '{d}' && tar --xattrs --xattrs-include='*' --acls --numeric-owner -C '{s}' -cf - . | tar --xattrs --xattrs-include='*' --acls --numeric-owner -C '{d}' -xpf -",
        s = src.display(),
        d = dst.display()
    ));
    assert_eq!(rsync_differences(&src, &dst), "");
    // Reading the tree back through the mount with tar gives the same archive listing.
    let listing = |d: &Path| {
        sh(&format!(
            "cd '{}' && tar --numeric-owner --full-time -cvf /dev/null . | sort",
            d.display()
        ))
    };
    assert_eq!(listing(&src), listing(&dst));
}

#[test]
fn cp_a_round_trips() {
    let (_server, mount, work) = setup();
    let src = work.path().join("src");
    let dst = mount.path.join("cp");
    sh(&format!("cp -a '{}' '{}'", src.display(), dst.display()));
    assert_eq!(rsync_differences(&src, &dst), "");
    let out = work.path().join("cp-out");
    sh(&format!("cp -a '{}' '{}'", dst.display(), out.display()));
    assert_eq!(rsync_differences(&src, &out), "");
    assert_eq!(
        sh(&format!(
            "cmp '{}/sparse' '{}/sparse' && echo same",
            src.display(),
            out.display()
        )),
        "same\n"
    );
}

#[test]
fn git_works_inside_the_mount_and_clones_from_it() {
    require_mount_support();
    let server = Server::start(&[]);
    let mount = Mount::new(&server, "data", &[]);
    let work = tempfile::tempdir().unwrap();
    let repo = mount.path.join("repo");
    let out = sh(&format!(
        r#"
        export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e HOME='{w}'
        git config --global init.defaultBranch main
        git config --global safe.directory '*'
        git init -q '{r}' && cd '{r}'
        for i in $(seq 50); do echo "line $i" > "f$i.txt"; done
        mkdir -p src/deep && echo 'fn main() {{}}' > src/deep/main.rs && ln -s src/deep/main.rs link.rs
        chmod +x f1.txt
        git add -A && git commit -q -m first
        git checkout -q -b topic && echo change >> f2.txt && git rm -q f3.txt && git commit -q -am second
        git checkout -q main && git merge -q --no-edit topic
        git status --porcelain
        echo status-clean
        git gc -q && git fsck --full --no-progress 2>&1 && echo fsck-ok
        git log --oneline | wc -l
        git clone -q '{r}' '{w}/clone' && cd '{w}/clone' && git log --oneline | wc -l && git status --porcelain && cat f2.txt | tail -1
        test -L link.rs && test -x f1.txt && echo modes-kept
        "#,
        w = work.path().display(),
        r = repo.display()
    ));
    assert_eq!(
        out, "status-clean\nfsck-ok\n2\n2\nchange\nmodes-kept\n",
        "{out}"
    );
    // A clean checkout in the mount stays clean after the index is refreshed.
    let status = sh(&format!(
        "cd '{}' && HOME='{}' git -c safe.directory='*' status --porcelain",
        repo.display(),
        work.path().display()
    ));
    assert_eq!(status, "");
}
