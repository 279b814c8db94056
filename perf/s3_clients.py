"""Compare Python S3 clients (boto3, minio, obstore) against a local S3 server.

Groundwork for issue 15 (S3 object store mode). Starts SeaweedFS (`weed mini`)
if `weed` is on PATH, else moto_server as a stand-in, both on 127.0.0.1, data
in a temp folder removed at the end; or uses --endpoint. Each client runs in
its own child process so its CPU seconds are its own, not the server's.
Run with the venv that holds the clients, e.g. /tmp/s3venv/bin/python.
"""
import argparse, base64, hashlib, json, os, shutil, socket, statistics
import subprocess, sys, tempfile, time, urllib.request

MiB, KiB = 1 << 20, 1 << 10
KEY, SECRET, REGION = "fxbench", "fxbenchsecret", "us-east-1"
CLIENTS = ("boto3", "minio", "obstore")
# Which clients send x-amz-checksum-sha256 per part through their public API.
CHECKSUM = {"boto3": True, "minio": False, "obstore": True}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp):
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
    if shutil.which("weed"):
        kind = "seaweedfs"
        cmd = ["weed", "mini", "-dir", tmp, "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
               "-s3.port", str(port)]
    else:
        kind = "moto"
        moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
        cmd = [moto, "-H", "127.0.0.1", "-p", str(port)]
    log = open(os.path.join(tmp, "server.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):  # bounded: 30 s
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.1)
    return proc, url, kind


def make(client, url, bucket):
    if client == "boto3":
        import boto3
        return boto3.client("s3", endpoint_url=url, aws_access_key_id=KEY,
                            aws_secret_access_key=SECRET, region_name=REGION)
    if client == "minio":
        from minio import Minio
        return Minio(url.split("//")[1], KEY, SECRET, secure=False, region=REGION)
    from obstore.store import S3Store
    return S3Store(bucket, endpoint=url, access_key_id=KEY, secret_access_key=SECRET,
                   region=REGION, virtual_hosted_style_request=False,
                   checksum_algorithm="sha256", client_options={"allow_http": True})


def mpu(client, c, bucket, key, data, part):
    parts = [data[i:i + part] for i in range(0, len(data), part)]
    if client == "boto3":
        up = c.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
        done = []
        for n, p in enumerate(parts, 1):
            ck = base64.b64encode(hashlib.sha256(p).digest()).decode()
            r = c.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                              Body=p, ChecksumSHA256=ck)
            done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": ck})
        c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                    MultipartUpload={"Parts": done})
    elif client == "minio":
        from minio.datatypes import Part
        uid = c._create_multipart_upload(bucket, key, {})
        done = [Part(n, c._upload_part(bucket, key, p, None, uid, n))
                for n, p in enumerate(parts, 1)]
        c._complete_multipart_upload(bucket, key, uid, done)
    else:
        import obstore
        obstore.put(c, key, memoryview(data), use_multipart=True, chunk_size=part,
                    max_concurrency=1)


def put(client, c, bucket, key, data):
    if client == "boto3":
        c.put_object(Bucket=bucket, Key=key, Body=data)
    elif client == "minio":
        import io
        c.put_object(bucket, key, io.BytesIO(data), len(data))
    else:
        import obstore
        obstore.put(c, key, data)


def get_range(client, c, bucket, key, off, n):
    if client == "boto3":
        return c.get_object(Bucket=bucket, Key=key, Range=f"bytes={off}-{off + n - 1}")["Body"].read()
    if client == "minio":
        r = c.get_object(bucket, key, offset=off, length=n)
        try:
            return r.read()
        finally:
            r.close(); r.release_conn()
    import obstore
    return bytes(obstore.get_range(c, key, start=off, end=off + n))


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def worker(a):
    """One client, one run: prints one JSON line of wall and CPU seconds per phase."""
    c = make(a.worker, a.endpoint, a.bucket)
    big = os.urandom(a.mpu_mib * MiB)
    small = os.urandom(16 * KiB)
    packed = os.urandom(a.gets * 64 * KiB)
    pre = f"{a.worker}/{a.run}/"
    out = {"client": a.worker, "run": a.run}
    out["mpu"] = timed(lambda: mpu(a.worker, c, a.bucket, pre + "big", big, 8 * MiB))
    out["puts"] = timed(lambda: [put(a.worker, c, a.bucket, f"{pre}s/{i}", small)
                                 for i in range(a.puts)])
    put(a.worker, c, a.bucket, pre + "packed", packed)
    got = []
    out["gets"] = timed(lambda: got.extend(
        get_range(a.worker, c, a.bucket, pre + "packed", i * 64 * KiB, 64 * KiB)
        for i in range(a.gets)))
    assert b"".join(got) == packed, "ranged GETs returned wrong bytes"
    print(json.dumps(out))


def summarize(client, runs, a):
    med = lambda ph, i: statistics.median(r[ph][i] for r in runs)
    return {"client": client, "checksum_sha256_parts": CHECKSUM[client],
            "mpu_MiB_s": round(a.mpu_mib / med("mpu", 0), 1),
            "mpu_cpu_s": round(med("mpu", 1), 3),
            "put16k_obj_s": round(a.puts / med("puts", 0), 1),
            "put16k_cpu_s": round(med("puts", 1), 3),
            "get64k_obj_s": round(a.gets / med("gets", 0), 1),
            "get64k_MiB_s": round(a.gets / 16 / med("gets", 0), 1),
            "get64k_cpu_s": round(med("gets", 1), 3), "runs": runs}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint"); p.add_argument("--bucket", default="fxbench")
    p.add_argument("--small", action="store_true", help="32 MiB / 50 PUTs / 20 GETs")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--worker"); p.add_argument("--run", type=int, default=0)
    p.add_argument("--mpu-mib", type=int, default=256)
    p.add_argument("--puts", type=int, default=500); p.add_argument("--gets", type=int, default=200)
    a = p.parse_args()
    if a.small:
        a.mpu_mib, a.puts, a.gets = 32, 50, 20
    if a.worker:
        return worker(a)
    tmp = tempfile.mkdtemp(prefix="s3bench-")
    proc, kind = None, "external"
    try:
        if not a.endpoint:
            proc, a.endpoint, kind = start_server(tmp)
        import boto3
        admin = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=KEY,
                             aws_secret_access_key=SECRET, region_name=REGION)
        admin.create_bucket(Bucket=a.bucket)
        rows = []
        for client in a.clients.split(","):
            runs = []
            for r in range(a.runs):
                cmd = [sys.executable, __file__, "--worker", client, "--run", str(r),
                       "--endpoint", a.endpoint, "--bucket", a.bucket, "--mpu-mib",
                       str(a.mpu_mib), "--puts", str(a.puts), "--gets", str(a.gets)]
                runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                      text=True, timeout=900).stdout))
                # The server keeps objects in memory or temp files; drop the big one.
                admin.delete_object(Bucket=a.bucket, Key=f"{client}/{r}/big")
            row = summarize(client, runs, a)
            row.update(server=kind, mpu_mib=a.mpu_mib, puts=a.puts, gets=a.gets)
            rows.append(row)
            print({k: v for k, v in row.items() if k != "runs"}, flush=True)
        res = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        os.makedirs(res, exist_ok=True)
        path = os.path.join(res, time.strftime("s3-clients-%Y%m%dT%H%M%SZ.jsonl", time.gmtime()))
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print("wrote", path)
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill(); proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
