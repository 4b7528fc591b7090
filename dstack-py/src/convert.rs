//! Conversions between Python values and the library's: variables, JSON values, times.

use dstack_core::Overrides;
use dstack_core::yaml::{Scalar, Style};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString};

/// `variables={...}` as overrides: `int`, `float`, `bool` and `str` values; anything else is a
/// `TypeError` that names the variable.
pub(crate) fn overrides(variables: Option<&Bound<'_, PyAny>>) -> PyResult<Overrides> {
    let mut out = Overrides::new();
    let Some(variables) = variables.filter(|v| !v.is_none()) else {
        return Ok(out);
    };
    let Ok(mapping) = variables.cast::<PyMapping>() else {
        return Err(PyTypeError::new_err(format!(
            "`variables` must be a mapping of variable names to values, got {}",
            type_name(variables)
        )));
    };
    for item in mapping.items()?.iter() {
        let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
        let Ok(name) = key.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "variable names must be strings, got {} `{}`",
                type_name(&key),
                key.repr()?
            )));
        };
        let name = name.to_str()?.to_owned();
        out.set(name.clone(), scalar(&name, &value)?);
    }
    Ok(out)
}

/// One variable's value as a YAML scalar typed as the user meant it.
fn scalar(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Scalar> {
    if let Ok(b) = value.cast::<PyBool>() {
        let text = if b.is_true() { "true" } else { "false" };
        return Ok(Scalar::new(text.to_owned(), Style::Plain));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(Scalar::new(value.str()?.to_str()?.to_owned(), Style::Plain));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        let v = f.value();
        // YAML spells the special values `.nan`, `.inf` and `-.inf`.
        let text = if v.is_nan() {
            ".nan".to_owned()
        } else if v.is_infinite() {
            if v > 0.0 { ".inf" } else { "-.inf" }.to_owned()
        } else {
            value.repr()?.to_str()?.to_owned()
        };
        return Ok(Scalar::new(text, Style::Plain));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Scalar::string(s.to_str()?));
    }
    Err(PyTypeError::new_err(format!(
        "variable `{name}` must be an int, float, bool or str, got {}",
        type_name(value)
    )))
}

/// A whole-number argument that must lie in `min..=max`: a `ValueError` that names it
/// otherwise (not pyo3's `OverflowError` for a negative or huge number).
pub(crate) fn bounded<T: TryFrom<i128>>(
    what: &str,
    value: i128,
    min: i128,
    max: i128,
) -> PyResult<T> {
    if value < min || value > max {
        let range = if max == i128::from(u32::MAX) || max == i128::from(u64::MAX) {
            format!("at least {min}")
        } else {
            format!("between {min} and {max}")
        };
        return Err(PyValueError::new_err(format!(
            "`{what}` must be {range}, got {value}"
        )));
    }
    T::try_from(value).map_err(|_| PyValueError::new_err(format!("`{what}` is out of range")))
}

/// A list of strings (`None`: empty); a lone string is refused with the list it meant.
pub(crate) fn strings(what: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    if let Ok(s) = value.cast::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "`{what}` must be a list of strings, got str: write [{}]",
            s.repr()?
        )));
    }
    value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "`{what}` must be a list of strings, got {}",
            type_name(value)
        ))
    })
}

/// The name of a value's type, for messages.
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "an object".to_owned(), |n| n.to_string())
}

/// A JSON value as Python objects (`dict`, `list`, `str`, `int`, `float`, `bool`, `None`).
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    value: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        J::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

static FROM_TIMESTAMP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Milliseconds since the epoch as an aware `datetime` in UTC.
pub(crate) fn datetime(py: Python<'_>, ms: Option<i64>) -> PyResult<Option<Bound<'_, PyAny>>> {
    let Some(ms) = ms else {
        return Ok(None);
    };
    let from_timestamp = FROM_TIMESTAMP.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("datetime")?
                .getattr("datetime")?
                .getattr("fromtimestamp")?
                .unbind(),
        )
    })?;
    let utc = UTC.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("datetime")?
                .getattr("timezone")?
                .getattr("utc")?
                .unbind(),
        )
    })?;
    #[allow(clippy::cast_precision_loss)]
    let secs = ms as f64 / 1000.0;
    from_timestamp
        .bind(py)
        .call1((secs, utc.bind(py)))
        .map(Some)
}

/// A `since=` argument (`datetime`, `timedelta` back from now, or `None`) as milliseconds
/// since the epoch.
pub(crate) fn since_ms(since: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    let Some(since) = since.filter(|s| !s.is_none()) else {
        return Ok(None);
    };
    let py = since.py();
    let dt = py.import("datetime")?;
    let secs: f64 = if since.is_instance(&dt.getattr("timedelta")?)? {
        let back: f64 = since.call_method0("total_seconds")?.extract()?;
        #[allow(clippy::cast_precision_loss)]
        let now = dstack_core::run::now_ms() as f64 / 1000.0;
        now - back
    } else if since.is_instance(&dt.getattr("datetime")?)? {
        since.call_method0("timestamp")?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "`since` must be a datetime, a timedelta or None, got {}",
            type_name(since)
        )));
    };
    if !secs.is_finite() {
        return Err(PyValueError::new_err("`since` is out of range"));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(Some((secs * 1000.0) as i64))
}

/// Python's `repr()` of a value, for `__repr__`s.
pub(crate) fn r<'py, T>(py: Python<'py>, value: T) -> String
where
    T: IntoPyObject<'py>,
{
    use pyo3::BoundObject as _;
    value
        .into_pyobject(py)
        .ok()
        .and_then(|v| v.into_bound().into_any().repr().ok())
        .map_or_else(|| "?".to_owned(), |s| s.to_string())
}
