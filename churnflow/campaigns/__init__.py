"""Retention campaigns: whom to contact (`churnflow plan`), who the offer changes (uplift), and what a
campaign kept against its control group (`churnflow campaign-report`)."""
