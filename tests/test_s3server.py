import fsspec
import pyarrow.fs as pafs


def test_boto3_s3fs_and_pyarrow_reach_the_same_server(s3_server, bucket, s3_client):
    s3_client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    with fsspec.open(f"s3://{bucket}/a/b.txt", "rb") as f:
        assert f.read() == b"hello"
    fs = pafs.S3FileSystem(
        endpoint_override=s3_server.endpoint_url,
        scheme="http",
        access_key="shardmap-test",
        secret_key="shardmap-test-secret",
    )
    with fs.open_input_stream(f"{bucket}/a/b.txt") as f:
        assert f.read() == b"hello"
