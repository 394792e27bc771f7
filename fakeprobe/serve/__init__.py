"""``fakeprobe serve``: a web page and a REST API that score uploaded videos and images with
models loaded once (see :mod:`fakeprobe.serve.app`)."""

from fakeprobe.serve.app import ServeConfig, check_host, create_app, load_predictors, serve

__all__ = ["ServeConfig", "check_host", "create_app", "load_predictors", "serve"]
