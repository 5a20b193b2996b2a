//! The generator on a small fixture (snapshots) and on broken definitions (errors that
//! name the line).

use hypercall_gen::{Definition, generate};

const FIXTURE: &str = include_str!("fixtures/small.toml");

fn outputs() -> [hypercall_gen::Output; 3] {
    let def = Definition::parse("small.toml", FIXTURE).expect("the fixture is valid");
    generate(&def).expect("rustfmt formats the generated code")
}

#[test]
fn xen_pv_abi_output() {
    insta::assert_snapshot!("guest", outputs()[0].content);
}

#[test]
fn hypervisor_output() {
    insta::assert_snapshot!("hypervisor", outputs()[1].content);
}

#[test]
fn docs_output() {
    insta::assert_snapshot!("docs", outputs()[2].content);
}

/// Reordering entries (here: reversing the hypercall blocks) changes no number and no
/// output byte: numbers are explicit, outputs are sorted by number.
#[test]
fn order_of_entries_does_not_matter() {
    let blocks: Vec<&str> = FIXTURE.split("\n[hypercall.").collect();
    let (head, rest) = blocks.split_first().unwrap();
    let mut reordered = head.to_string();
    for b in rest.iter().rev() {
        reordered.push_str("\n[hypercall.");
        reordered.push_str(b);
        reordered.push('\n');
    }
    assert_ne!(reordered, FIXTURE);
    let a = Definition::parse("small.toml", FIXTURE).unwrap();
    let b = Definition::parse("small.toml", &reordered).unwrap();
    assert_eq!(a, b);
}

fn error_of(text: &str) -> String {
    Definition::parse("hypercalls.toml", text)
        .expect_err("the definition must be rejected")
        .to_string()
}

#[test]
fn rejects_duplicate_numbers_naming_both_lines() {
    let text = "[hypercall.xen_version]\nnr = 17\nstatus = \"unimplemented\"\n\n\
                [hypercall.yet_another]\nnr = 17\nstatus = \"unimplemented\"\n";
    assert_eq!(
        error_of(text),
        "hypercalls.toml:6: duplicate hypercall number 17 (also xen_version at line 2)"
    );
}

#[test]
fn rejects_unknown_types_at_their_line() {
    let text = "[hypercall.foo]\nnr = 1\nstatus = \"unimplemented\"\nargs = [\n\
                { name = \"a\", type = \"u32\" },\n\
                { name = \"b\", type = \"NoSuchStruct\", ptr = \"in\" },\n]\n";
    assert_eq!(
        error_of(text),
        "hypercalls.toml:6: unknown type \"NoSuchStruct\" (a scalar, void, or a [struct.<Name>] entry)"
    );
    let scalar = "[hypercall.foo]\nnr = 1\nstatus = \"unimplemented\"\n\
                  args = [{ name = \"a\", type = \"u33\" }]\n";
    assert!(error_of(scalar).starts_with("hypercalls.toml:4: unknown type \"u33\""));
}

#[test]
fn rejects_a_sub_op_without_a_number() {
    let text = "[hypercall.sched_op]\nnr = 29\nstatus = \"unimplemented\"\n\
                args = [{ name = \"cmd\", type = \"u32\" }]\n\n\
                [[hypercall.sched_op.subops]]\non = \"cmd\"\nprefix = \"SCHEDOP_\"\n\
                ops.yield = { nr = 0 }\nops.block = { arg = \"x\" }\n";
    assert_eq!(
        error_of(text),
        "hypercalls.toml:10: sub-op SCHEDOP_BLOCK has no number"
    );
}

#[test]
fn rejects_other_mistakes_with_a_line() {
    // A hypercall without a number.
    let text = "\n[hypercall.foo]\nstatus = \"implemented\"\n";
    assert_eq!(
        error_of(text),
        "hypercalls.toml:2: hypercall foo has no number"
    );
    // An implemented hypercall using a struct that has no Rust type.
    let text = "[hypercall.foo]\nnr = 1\nstatus = \"implemented\"\n\
                args = [{ name = \"p\", type = \"S\", ptr = \"in\" }]\n\n\
                [struct.S]\nc = \"struct s\"\nsize = 4\nfields = { a = 0 }\n";
    assert!(error_of(text).starts_with("hypercalls.toml:4: struct S is used by an implemented"));
    // A count naming no argument, a field outside its struct, TOML syntax.
    let text = "[hypercall.foo]\nnr = 1\nstatus = \"unimplemented\"\n\
                args = [{ name = \"p\", type = \"u8\", ptr = \"in\", count = \"n\" }]\n";
    assert!(error_of(text).starts_with("hypercalls.toml:4: count \"n\""));
    let text = "[struct.S]\nc = \"struct s\"\nsize = 4\nfields = { a = 4 }\n";
    assert!(error_of(text).starts_with("hypercalls.toml:4: field S.a at offset 4"));
    assert!(error_of("[hypercall.foo]\nnr = = 1\n").starts_with("hypercalls.toml:2: "));
}
