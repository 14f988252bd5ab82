from django.urls import path

from bench.floor.views import floor_view
from config.urls import urlpatterns as service_urlpatterns

urlpatterns = [*service_urlpatterns, path("bench/floor", floor_view)]
