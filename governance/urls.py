from django.urls import path

from governance import views

app_name = "governance"

urlpatterns = [
    path("proposals/", views.proposal_list, name="proposal_list"),
    path("proposals/<int:proposal_id>/", views.proposal_detail, name="proposal_detail"),
    path("sale/", views.sale_page, name="sale"),
    path("staking/", views.staking_page, name="staking"),
    path("staking/<int:stake_id>/unstake/", views.unstake, name="unstake"),
]
