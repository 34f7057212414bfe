#!/usr/bin/python3
"""A gRPC client forky did not write: forkyd's API from Python, with stubs generated from
proto/ at run time by protoc and grpc_python_plugin (Debian's protobuf-compiler-grpc and
python3-grpcio). Used by the integration tests; also handy by hand:

  tests/daemon/client.py SOCKET list
  tests/daemon/client.py SOCKET up SPEC [NAME]
  tests/daemon/client.py SOCKET fork VM COUNT
  tests/daemon/client.py SOCKET console VM PATTERN   (follows until PATTERN appears)
  tests/daemon/client.py SOCKET rm VM
  tests/daemon/client.py SOCKET events N             (prints N events, one a line)
  tests/daemon/client.py SOCKET reflect              (lists services through reflection)

Prints results one a line; on an RPC error prints 'error CODE exit N: message' and exits 1.
"""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto")


def generate(proto_path, proto, out):
    subprocess.run(
        ["protoc", "--proto_path=" + proto_path, "--python_out=" + out, "--grpc_out=" + out,
         "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", proto],
        check=True)


def stubs():
    out = tempfile.mkdtemp(prefix="forky-stubs-")
    generate(PROTO, os.path.join(PROTO, "forky", "v1", "forky.proto"), out)
    reflection = os.path.join(HERE, "reflection")
    generate(reflection, os.path.join(reflection, "reflection.proto"), out)
    sys.path.insert(0, out)
    from forky.v1 import forky_pb2, forky_pb2_grpc  # noqa: E402
    return forky_pb2, forky_pb2_grpc


def main():
    import grpc
    socket, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    pb, rpc = stubs()
    channel = grpc.insecure_channel("unix:" + socket)
    api = rpc.ForkyStub(channel)
    print("calling", cmd, flush=True)
    try:
        if cmd == "list":
            for vm in api.List(pb.ListRequest(), timeout=60).vms:
                print(vm.name, vm.state, vm.parent or "-")
        elif cmd == "up":
            r = api.Up(pb.UpRequest(spec_path=args[0], name=args[1] if len(args) > 1 else ""),
                       timeout=300)
            print(r.vm.name)
        elif cmd == "fork":
            r = api.Fork(pb.ForkRequest(source=args[0], count=int(args[1])), timeout=300)
            for c in r.children:
                print(c)
        elif cmd == "rm":
            api.Remove(pb.RemoveRequest(vm=args[0], force=True), timeout=120)
            print("removed", args[0])
        elif cmd == "console":
            text = b""
            for chunk in api.Console(pb.ConsoleRequest(vm=args[0], follow=True), timeout=120):
                text += chunk.data
                m = re.search(args[1].encode(), text)
                if m:
                    print(m.group(0).decode())
                    break
            else:
                print("stream ended without", args[1])
                return 1
        elif cmd == "events":
            n = int(args[0])
            stream = api.Events(pb.EventsRequest(), timeout=300)
            print("subscribed", flush=True)
            for e in stream:
                print(e.vm, e.kind, e.detail, "forky" if e.forky else "other", flush=True)
                n -= 1
                if n == 0:
                    break
        elif cmd == "reflect":
            import reflection_pb2
            import reflection_pb2_grpc
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            for resp in stub.ServerReflectionInfo(iter([req]), timeout=30):
                for s in resp.list_services_response.service:
                    print(s.name)
        else:
            print("unknown command", cmd)
            return 2
    except grpc.RpcError as e:
        code = dict(e.trailing_metadata() or ()).get("forky-exit-code", "-")
        print("error %s exit %s: %s" % (e.code().name, code, e.details()), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
