// `?` in the body converts errors with `From` into the declared error type.

use std::num::ParseIntError;

#[derive(Debug)]
enum AppError {
    Parse(ParseIntError),
    Negative,
}

impl From<ParseIntError> for AppError {
    fn from(err: ParseIntError) -> Self {
        AppError::Parse(err)
    }
}

#[redcache::cached(ttl = 60)]
async fn parse(text: String) -> Result<u32, AppError> {
    let value: i64 = text.parse()?;
    if value < 0 {
        return Err(AppError::Negative);
    }
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

#[redcache::cached(ttl = 60)]
async fn parse_option(text: String) -> Result<Option<u32>, AppError> {
    if text.is_empty() {
        return Ok(None);
    }
    Ok(Some(text.parse()?))
}

#[redcache::cached(ttl = 60)]
async fn boxed(text: String) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Ok(text.parse::<u32>()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(parse("42".to_owned()).await.unwrap(), 42);
            match parse("x".to_owned()).await {
                Err(AppError::Parse(err)) => assert!(!err.to_string().is_empty()),
                other => panic!("expected a parse error, got {other:?}"),
            }
            assert!(matches!(
                parse("-1".to_owned()).await,
                Err(AppError::Negative)
            ));
            assert_eq!(parse_option(String::new()).await.unwrap(), None);
            assert_eq!(parse_option("7".to_owned()).await.unwrap(), Some(7));
            assert!(boxed("y".to_owned()).await.is_err());
        })
        .await;
}
