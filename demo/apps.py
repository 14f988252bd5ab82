from django.apps import AppConfig


class DemoConfig(AppConfig):
    """``make run``: every app's demo data and the local fakes of the outside services. It sits on
    top of every other app (it seeds them all), and nothing imports it."""

    name = "demo"
