"""cc_grpc_library for Debian: runs protoc with /usr/bin/grpc_cpp_plugin.

Debian ships no gRPC Bazel rules. `cc_grpc_library` generates
`*.grpc.pb.{h,cc}` for the direct sources of one proto_library and wraps them
in a cc_library with the matching cc_proto_library. protoc reads the
transitive descriptor sets, so imports resolve without the .proto files.

REQUIRES: the proto_library has no strip_import_prefix/import_prefix and sits
in the same package as the cc_grpc_library (outputs are declared by basename).
"""

def _grpc_codegen_impl(ctx):
    info = ctx.attr.proto[ProtoInfo]
    hdrs = []
    srcs = []
    for src in info.direct_sources:
        base = src.basename[:-len(".proto")]
        hdrs.append(ctx.actions.declare_file(base + ".grpc.pb.h"))
        srcs.append(ctx.actions.declare_file(base + ".grpc.pb.cc"))

    args = ctx.actions.args()
    args.add("--plugin=protoc-gen-grpc=" + ctx.executable._plugin.path)
    args.add("--grpc_out=" + ctx.bin_dir.path)
    args.add_joined(
        "--descriptor_set_in",
        info.transitive_descriptor_sets,
        join_with = ":",
    )
    args.add_all([s.short_path for s in info.direct_sources])
    ctx.actions.run(
        inputs = info.transitive_descriptor_sets,
        outputs = hdrs + srcs,
        executable = ctx.executable._protoc,
        tools = [ctx.executable._plugin],
        arguments = [args],
        mnemonic = "GrpcCodegen",
        progress_message = "Generating gRPC C++ for %s" % ctx.label,
    )
    return [
        DefaultInfo(files = depset(hdrs + srcs)),
        OutputGroupInfo(hdrs = depset(hdrs), srcs = depset(srcs)),
    ]

_grpc_codegen = rule(
    implementation = _grpc_codegen_impl,
    attrs = {
        "proto": attr.label(mandatory = True, providers = [ProtoInfo]),
        "_protoc": attr.label(
            default = "@com_google_protobuf//:protoc",
            executable = True,
            cfg = "host",
            allow_single_file = True,
        ),
        "_plugin": attr.label(
            default = "@com_google_protobuf//:bin/grpc_cpp_plugin",
            executable = True,
            cfg = "host",
            allow_single_file = True,
        ),
    },
)

def cc_grpc_library(name, proto, cc_proto, visibility = None):
    """A cc_library with the gRPC C++ stubs of `proto`, depending on `cc_proto`."""
    _grpc_codegen(name = name + "_codegen", proto = proto)
    native.filegroup(
        name = name + "_hdrs",
        srcs = [":" + name + "_codegen"],
        output_group = "hdrs",
    )
    native.filegroup(
        name = name + "_srcs",
        srcs = [":" + name + "_codegen"],
        output_group = "srcs",
    )
    native.cc_library(
        name = name,
        hdrs = [":" + name + "_hdrs"],
        srcs = [":" + name + "_srcs"],
        deps = [cc_proto, "//third_party/system:grpc"],
        visibility = visibility,
    )
