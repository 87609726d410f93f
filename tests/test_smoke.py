from tests import images
from tests.conftest import Server


def test_upload_then_fetch_byte_exact(server: Server) -> None:
    data = images.png(32, 32)
    created = server.upload(data, "a.png")
    assert created.status == 201, created.body
    image = created.json()
    fetched = server.request("GET", f"/i/{image['id']}")
    assert fetched.status == 200
    assert fetched.body == data
