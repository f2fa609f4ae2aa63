"""The WSGI entry point: ``gunicorn app:app``. Builds settings, builds the app, nothing else."""
from api_config import SettingsError, load_settings
from catbot.web import create_app

try:
    app = create_app(load_settings())
except SettingsError as exc:
    raise SystemExit(str(exc)) from None
