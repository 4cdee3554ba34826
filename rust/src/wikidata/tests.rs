//! Whole-scan tests over small dumps written here in the dump format.
use std::io::Write;
use std::path::PathBuf;

use super::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ditto-wd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn item_value(id: &str) -> String {
    format!(r#"{{"value":{{"entity-type":"item","numeric-id":{},"id":"{id}"}},"type":"wikibase-entityid"}}"#, &id[1..])
}

fn statement(prop: &str, datavalue: &str, rank: &str) -> String {
    format!(r#"{{"mainsnak":{{"snaktype":"value","property":"{prop}","datavalue":{datavalue}}},"type":"statement","rank":"{rank}"}}"#)
}

fn entity(id: &str, kind: &str, labels: &[(&str, &str)], claims: &[(&str, Vec<String>)], sites: &[(&str, &str)]) -> String {
    let labels: Vec<String> =
        labels.iter().map(|(l, v)| format!(r#""{l}":{{"language":"{l}","value":"{v}"}}"#)).collect();
    let claims: Vec<String> = claims.iter().map(|(p, s)| format!(r#""{p}":[{}]"#, s.join(","))).collect();
    let sites: Vec<String> =
        sites.iter().map(|(s, t)| format!(r#""{s}":{{"site":"{s}","title":"{t}","badges":[]}}"#)).collect();
    format!(
        r#"{{"type":"{kind}","id":"{id}","labels":{{{}}},"descriptions":{{}},"aliases":{{}},"claims":{{{}}},"sitelinks":{{{}}}}}"#,
        labels.join(","),
        claims.join(","),
        sites.join(",")
    )
}

fn dump(lines: &[String]) -> String {
    let mut s = String::from("[\n");
    for l in lines {
        s.push_str(l);
        s.push_str(",\n");
    }
    s.push_str("]\n");
    s
}

fn cfg(keep_top: Option<usize>, chunk_bytes: usize) -> ScanConfig {
    ScanConfig {
        languages: vec!["en".into(), "zh".into()],
        classes: vec![("Q15632617".into(), "fictional".into()), ("Q5".into(), "human".into())],
        properties: vec!["P27".into(), "P106".into()],
        keep_top,
        chunk_bytes,
    }
}

/// A world where claims point both backwards and forwards in the file.
fn world() -> Vec<String> {
    let human = |id: &str, en: &str, job: &str, sites: &[(&str, &str)]| {
        entity(
            id,
            "item",
            &[("en", en), ("zh", &format!("{en}-zh"))],
            &[("P31", vec![statement("P31", &item_value("Q5"), "normal")]), ("P106", vec![statement("P106", &item_value(job), "normal")])],
            sites,
        )
    };
    let mut v = vec![
        entity("Q700", "item", &[("en", "writer"), ("zh", "作家")], &[], &[]),
        human("Q1", "Ann", "Q700", &[("enwiki", "Ann (writer)"), ("frwiki", "Ann")]),
        human("Q2", "Bo", "Q701", &[]),
    ];
    for i in 0..40 {
        v.push(entity(&format!("Q{}", 1000 + i), "item", &[("en", "filler")], &[], &[("enwiki", "x")]));
    }
    v.push(entity("Q701", "item", &[("en", "painter")], &[], &[]));
    v.push(entity("P106", "property", &[("en", "occupation"), ("zh", "职业")], &[], &[]));
    v
}

fn run(path: &Path, cfg: &ScanConfig, ck: Option<&Path>) -> Result<ScanOutput, ScanError> {
    scan(path, cfg, ck, &mut |_| Ok(()))
}

fn table(out: &ScanOutput) -> String {
    String::from_utf8(rows_to_ndjson(&out.rows)).unwrap()
}

#[test]
fn resolves_forward_and_backward_references() {
    let d = dir("world");
    let p = d.join("dump.json");
    std::fs::write(&p, dump(&world())).unwrap();
    let out = run(&p, &cfg(None, 1 << 20), None).unwrap();
    let rows: Vec<(String, String, String)> = out
        .rows
        .iter()
        .map(|r| (r.character_id.clone(), r.lang.clone(), r.claims.iter().map(|c| format!("{}={}", c.property, c.value)).collect()))
        .collect();
    assert_eq!(
        rows,
        [
            ("Q1".to_string(), "en".to_string(), "occupation=writer".to_string()),
            ("Q2".into(), "en".into(), "occupation=painter".into()),
            ("Q1".into(), "zh".into(), "职业=作家".into()),
            ("Q2".into(), "zh".into(), "职业=painter".into()),
        ]
    );
    assert_eq!(out.rows[0].sitelinks, 2);
    assert_eq!(out.rows[0].wiki_title.as_deref(), Some("Ann (writer)"));
    assert_eq!(out.rows[2].wiki_title, None);
    assert_eq!(out.stats.entities, 45);
    assert_eq!(out.stats.matched, 2);
    assert!(!out.stats.missing_close);
}

#[test]
fn interrupted_scan_resumes_to_the_same_table() {
    let d = dir("resume");
    let p = d.join("dump.json");
    std::fs::write(&p, dump(&world())).unwrap();
    let whole = table(&run(&p, &cfg(Some(1), 1 << 20), None).unwrap());
    let ck = d.join("scan.ckpt");
    let mut calls = 0;
    let stop_after_3 = &mut |_: &Progress| {
        calls += 1;
        if calls == 3 { Err(()) } else { Ok(()) }
    };
    assert!(matches!(scan(&p, &cfg(Some(1), 1024), Some(&ck), stop_after_3), Err(ScanError::Interrupted)));
    let resumed = run(&p, &cfg(Some(1), 1024), Some(&ck)).unwrap();
    assert!(resumed.stats.resumed_at_line.unwrap() > 1);
    assert_eq!(table(&resumed), whole);
    // Settings that differ from the checkpoint's are refused, not mixed in.
    assert!(matches!(run(&p, &cfg(Some(2), 1024), Some(&ck)), Err(ScanError::Invalid(_))));
}

#[test]
fn compressed_inputs_give_the_same_table() {
    let d = dir("codecs");
    let text = dump(&world());
    let plain = d.join("dump.json");
    std::fs::write(&plain, &text).unwrap();
    let expect = table(&run(&plain, &cfg(None, 2048), None).unwrap());
    let half = text.len() / 2;
    let cut = half + text[half..].find('\n').unwrap() + 1;
    let mut gz = Vec::new();
    for part in [&text[..cut], &text[cut..]] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(part.as_bytes()).unwrap();
        gz.extend(e.finish().unwrap());
    }
    std::fs::write(d.join("dump.json.gz"), &gz).unwrap();
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    std::fs::write(d.join("dump.json.bz2"), e.finish().unwrap()).unwrap();
    for name in ["dump.json.gz", "dump.json.bz2"] {
        assert_eq!(table(&run(&d.join(name), &cfg(None, 2048), None).unwrap()), expect, "{name}");
    }
    // Resuming inside the second gzip member.
    let ck = d.join("gz.ckpt");
    let mut calls = 0;
    let stop = &mut |_: &Progress| {
        calls += 1;
        if calls == 4 { Err(()) } else { Ok(()) }
    };
    assert!(scan(&d.join("dump.json.gz"), &cfg(None, 2048), Some(&ck), stop).is_err());
    assert_eq!(table(&run(&d.join("dump.json.gz"), &cfg(None, 2048), Some(&ck)).unwrap()), expect);
}

#[test]
fn not_a_dump_fails_at_once() {
    let d = dir("notdump");
    for (name, bytes) in [
        ("a.csv", b"id,name\nQ1,Ann\n".to_vec()),
        ("empty.json", Vec::new()),
        ("obj.json", b"{\"hello\":\"world\"}\n".to_vec()),
        ("arr.json", b"[\n1,\n2\n]\n".to_vec()),
        ("bin.dat", vec![0u8, 159, 146, 150, 1, 2, 3]),
    ] {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        match run(&p, &cfg(None, 1024), None) {
            Err(ScanError::Invalid(m)) => {
                assert!(m.contains("not a Wikidata JSON dump") && !m.contains('\n'), "{name}: {m}")
            }
            Err(e) => panic!("{name}: {e}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
}
