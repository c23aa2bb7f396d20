//! A generated multi-megabyte agent module for `validate/static_large_module`: the agent ABI
//! plus thousands of functions mixing arithmetic, locals, memory access, branches, loops and
//! calls, so validation does the work a real compiled agent makes it do.

use wasm_encoder::{
    BlockType, CodeSection, ExportKind, ExportSection, Function, FunctionSection, MemArg,
    MemorySection, MemoryType, Module, TypeSection, ValType,
};

/// A valid agent module of at least `min_bytes` bytes.
pub(crate) fn large_agent_module(min_bytes: usize) -> Vec<u8> {
    // Types: 0 = (i32) -> i32 (alloc and workers), 1 = (i32, i32) -> i64 (handle).
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I64]);

    let body = worker_body();
    let per_function = body.byte_len() + 2;
    let workers = min_bytes / per_function + 1;

    let mut functions = FunctionSection::new();
    functions.function(0); // caxton_alloc
    functions.function(1); // caxton_handle
    for _ in 0..workers {
        functions.function(0);
    }

    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 2,
        maximum: Some(256),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });

    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("caxton_alloc", ExportKind::Func, 0);
    exports.export("caxton_handle", ExportKind::Func, 1);

    let mut code = CodeSection::new();
    let mut alloc = Function::new([]);
    alloc.instructions().i32_const(1024).end();
    code.function(&alloc);
    let mut handle = Function::new([]);
    // Reply with the message itself: (ptr << 32) | len.
    handle
        .instructions()
        .local_get(0)
        .i64_extend_i32_u()
        .i64_const(32)
        .i64_shl()
        .local_get(1)
        .i64_extend_i32_u()
        .i64_or()
        .end();
    code.function(&handle);
    for _ in 0..workers {
        code.function(&body);
    }

    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code);
    module.finish()
}

/// One worker: two locals, a loop over memory with branches, arithmetic and a call.
fn worker_body() -> Function {
    let mem = MemArg {
        offset: 0,
        align: 2,
        memory_index: 0,
    };
    let mut f = Function::new([(2, ValType::I32)]);
    let mut ins = f.instructions();
    for round in 0..24 {
        ins.local_get(0)
            .i32_const(round)
            .i32_add()
            .local_set(1)
            .block(BlockType::Empty)
            .loop_(BlockType::Empty)
            .local_get(1)
            .i32_const(4)
            .i32_mul()
            .i32_const(1023)
            .i32_and()
            .i32_load(mem)
            .local_get(2)
            .i32_xor()
            .local_set(2)
            .local_get(1)
            .i32_const(1)
            .i32_sub()
            .local_tee(1)
            .i32_eqz()
            .br_if(1)
            .br(0)
            .end()
            .end()
            .local_get(2)
            .i32_const(3)
            .i32_rotl()
            .local_set(2);
    }
    ins.i32_const(64)
        .local_get(2)
        .i32_store(mem)
        .local_get(2)
        .call(0)
        .drop()
        .local_get(2)
        .end();
    f
}
