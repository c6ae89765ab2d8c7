from django.urls import path

from reminders import views

urlpatterns = [
    path("reminders/", views.schedule_reminder),
    path("health/", views.health),
]
