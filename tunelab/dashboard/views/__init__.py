"""Built-in dashboard pages; every module here with a `PAGE` is listed (see registry).

Named `views`, not `pages`: Streamlit treats a `pages/` folder beside the app script as
pages of its own legacy navigation, which would bypass `st.navigation`.
"""
