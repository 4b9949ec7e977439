"""The admin's static files are served by the instance itself (whitenoise): Cloud Run has no
separate file server."""


def test_static_files__admin_css_is_served(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"body" in b"".join(response.streaming_content)


def test_static_files__swagger_ui_is_served_without_ninja_installed_as_an_app(client, settings):
    assert "ninja" not in settings.INSTALLED_APPS
    response = client.get("/static/ninja/swagger-ui-bundle.js")
    assert response.status_code == 200
    assert b"SwaggerUI" in b"".join(response.streaming_content)
