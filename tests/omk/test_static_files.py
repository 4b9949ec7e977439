"""The admin's static files are served by the instance itself (whitenoise): Cloud Run has no
separate file server."""


def test_static_files__admin_css_is_served(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)
