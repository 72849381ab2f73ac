"""The console page ships with the package and is served at `/` without touching a dependency."""

from herald.ops.ops_api import console


def test_the_console_page_is_read_from_the_installed_package():
    response = console()
    assert response.status_code == 200
    assert 'id="token"' in response.body.decode()
    assert response.headers["x-frame-options"] == "DENY"
