"""The WSGI entry point: ``gunicorn app:app``. Builds settings and clients, builds the app, nothing else."""
from api_config import SettingsError, create_x_client, load_settings
from catbot.runtime import build_runtime
from catbot.web import create_app

try:
    settings = load_settings()
except SettingsError as exc:
    raise SystemExit(str(exc)) from None
app = create_app(settings, build_runtime(settings, x_client=create_x_client(settings)))
