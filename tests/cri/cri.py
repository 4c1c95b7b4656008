#!/usr/bin/python3
"""A minimal Kubernetes CRI v1 client: one RuntimeService or ImageService call, JSON in, JSON out.

    cri.py SOCKET METHOD [REQUEST_JSON]     e.g. cri.py /tmp/x/containerd.sock RunPodSandbox '{"config": {...}}'

The request is the CRI v1 message for METHOD in protobuf's JSON mapping (camelCase or the proto's
snake_case names); the reply is printed the same way (proto field names, defaults included), the gRPC status on failure
(exit 1). The Python protobuf module is generated from Kubernetes' own api.proto (Debian 13's
golang-github-kubernetes-cri-api-dev, fetched by scripts/fetch-debs.sh) with Debian's protoc, once,
into $PREDICTIVE_E2E_CACHE/cri-py. Needs Debian's python3-grpcio, python3-protobuf, protobuf-compiler.
"""

import fcntl
import json
import os
import subprocess
import sys

CACHE = os.environ.get("PREDICTIVE_E2E_CACHE") or "/var/cache/predictive-e2e"
PROTO = os.path.join(CACHE, "cri-api/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto")
OUT = os.path.join(CACHE, "cri-py")


def generate():
    """api_pb2.py from api.proto without the gogoproto options (Go-only, and their import is not shipped)."""
    if os.path.exists(os.path.join(OUT, "api_pb2.py")):
        return
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(OUT, "api_pb2.py")):
            return
        with open(PROTO) as f:
            text = "".join(l for l in f if "gogo" not in l)
        tmp = os.path.join(OUT, "tmp")
        os.makedirs(tmp, exist_ok=True)
        with open(os.path.join(tmp, "api.proto"), "w") as f:
            f.write(text)
        subprocess.run(["protoc", "-I", tmp, "--python_out", tmp, os.path.join(tmp, "api.proto")],
                       check=True, timeout=60)
        os.rename(os.path.join(tmp, "api_pb2.py"), os.path.join(OUT, "api_pb2.py"))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sock, method = sys.argv[1], sys.argv[2]
    request = sys.argv[3] if len(sys.argv) == 4 else "{}"
    generate()
    sys.path.insert(0, OUT)
    import api_pb2  # noqa: E402
    import grpc
    from google.protobuf import json_format, message_factory

    for service in ("RuntimeService", "ImageService"):
        sdesc = api_pb2.DESCRIPTOR.services_by_name[service]
        mdesc = sdesc.methods_by_name.get(method)
        if mdesc:
            break
    else:
        sys.exit(f"cri.py: no CRI v1 method {method}")
    factory = message_factory.MessageFactory()
    req_cls = factory.GetPrototype(mdesc.input_type)
    resp_cls = factory.GetPrototype(mdesc.output_type)
    req = json_format.Parse(request, req_cls())
    with grpc.insecure_channel(f"unix://{sock}") as ch:
        call = ch.unary_unary(f"/runtime.v1.{service}/{method}",
                              request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)
        try:
            resp = call(req, timeout=float(os.environ.get("CRI_TIMEOUT", "60")))
        except grpc.RpcError as e:
            print(f"{method}: {e.code().name}: {e.details()}", file=sys.stderr)
            sys.exit(1)
    # Default values printed too: SANDBOX_READY and CONTAINER_CREATED are enum value 0.
    print(json_format.MessageToJson(resp, preserving_proto_field_name=True, indent=None,
                                    including_default_value_fields=True))


if __name__ == "__main__":
    main()
