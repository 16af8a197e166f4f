"""The static assets (htmx, its ws extension, the app's scripts and styles), served under /static/."""
